"""Answer generation: one runner behind LLaVA's four answer-generating modules, on the inference
engine (`llava.inference`). It imports no benchmark definition or scorer.

A runner definition (`AnswerTask`) says how a question file becomes `Sample`s; everything else is
common: load the model once, take this process's chunk of the questions, skip the ones already in
the answers file (resume), build each prompt with the conversation template, load the images,
generate in left-padded batches and append one JSON line per answer.

Beside the answers file, `<answers file>.meta.json` records what the answers depend on (model,
template, decoding, prompt options, the question file's SHA-256, the chunk; `llava.eval.run_record`).
A resume whose settings differ from the record is refused, naming each setting.

Formats, prompts and decoding follow LLaVA-1.5's `llava/eval/model_vqa*.py`
(https://github.com/haotian-liu/LLaVA/tree/main/llava/eval): an answer line holds `question_id`,
`prompt`, `text`, `answer_id`, `model_id` and `metadata` (plus runner-specific fields such as
MMBench's `round_id`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval import run_record
from llava.eval.prompts import MULTIPLE_CHOICE_SUFFIX
from llava.eval.scoring_io import iter_numbered_jsonl, read_jsonl_for_append
from llava.inference import DecodingSettings, open_conversation
from llava.inference.arguments import add_decoding_arguments, add_model_arguments, load_model
from llava.mm_utils import (
    ImageTooLargeError,
    MissingImageError,
    get_model_name_from_path,
    load_image,
    load_image_from_base64,
)

logger = logging.getLogger(__name__)

QuestionId = int | str
_SHORT_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_SHORT_ID_LENGTH = 22  # ceil(log_57(2^128))


def short_id() -> str:
    """A random 22-character id in shortuuid's alphabet (base 57 of a uuid4), as LLaVA's `answer_id`."""
    number = uuid.uuid4().int
    digits = []
    for _ in range(_SHORT_ID_LENGTH):
        number, digit = divmod(number, len(_SHORT_ID_ALPHABET))
        digits.append(_SHORT_ID_ALPHABET[digit])
    return "".join(reversed(digits))


# ----------------------------------------------------------------------------------------------
# Samples and runner definitions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """An image to load when its question is answered; `name` is what errors show, `path` the
    file it is read from (None for an image held in the question file)."""

    name: str
    loader: Callable[[], Image.Image]
    path: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ImageRef:
        path = os.fspath(path)
        return cls(path, lambda: load_image(path), path)

    @classmethod
    def from_base64(cls, data: str, name: str) -> ImageRef:
        def decode() -> Image.Image:
            if not data:
                raise FileNotFoundError(f"{name}: no image (empty cell)")
            try:
                return load_image_from_base64(data, name)
            except ImageTooLargeError:
                raise
            except (ValueError, OSError) as err:
                raise ValueError(f"{name}: cannot decode the base64 image ({err})") from err

        return cls(name, decode)

    def load(self) -> Image.Image:
        return self.loader()


@dataclass
class Sample:
    """One answer to generate.

    `prompt` is what the answer file records (LLaVA's `cur_prompt`); `query` is the user message
    given to the template, with its `<image>` placeholders and suffixes. `extra` fields are
    written to the answer line after `text`; `round_id`, when present, is part of the resume key.
    Question ids need not be unique: MME asks two questions per image under the image's path,
    and TextVQA's question file repeats a line (same image id, same prompt) where the benchmark
    asks one question twice about an image; each line is answered, as LLaVA's runner does.
    """

    question_id: QuestionId
    prompt: str
    query: str
    images: tuple[ImageRef, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Hashable:
        return answer_key({"question_id": self.question_id, "prompt": self.prompt, **self.extra})


def answer_key(record: dict[str, Any]) -> Hashable:
    """What identifies an answer for resuming: the question id, MMBench's round and the prompt."""
    return (record["question_id"], record.get("round_id"), record.get("prompt"))


@dataclass(frozen=True)
class AnswerTask:
    """A runner: how its question file is read and turned into samples, and its defaults.

    `name` is the runner's module (recorded beside its answers); `record_options` names the
    runner's own flags (`args` attributes) that change the prompts and so go into the record.
    """

    name: str
    description: str
    max_new_tokens: int
    read_records: Callable[[argparse.Namespace], Sequence[Any]]
    to_samples: Callable[[Any, argparse.Namespace], list[Sample]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    uses_image_folder: bool = True
    record_options: tuple[str, ...] = ()

    def build_parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(description=self.description)
        add_model_arguments(parser)
        parser.add_argument("--question-file", required=True)
        if self.uses_image_folder:
            parser.add_argument(
                "--image-folder", default="", help="folder the question file's image paths are relative to"
            )
        parser.add_argument("--answers-file", required=True)
        parser.add_argument(
            "--num-chunks", type=int, default=1, help="split the questions into K contiguous chunks"
        )
        parser.add_argument(
            "--chunk-idx", type=int, default=0, help="the chunk this process answers (0-based)"
        )
        add_decoding_arguments(parser, self.max_new_tokens)
        parser.add_argument(
            "--single-pred-prompt",
            action="store_true",
            help='append the multiple-choice suffix ("Answer with the option\'s letter ...") to every question',
        )
        parser.add_argument("--batch-size", type=int, default=1, help="questions per left-padded batch")
        parser.add_argument(
            "--skip-missing-images",
            action="store_true",
            help="skip (and count) questions whose image file is missing, or over Pillow's "
            "decompression-bomb limit (counted as unreadable), instead of stopping",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="start a fresh answers file instead of resuming"
        )
        if self.add_arguments is not None:
            self.add_arguments(parser)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> RunSummary:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        args = self.build_parser().parse_args(argv)
        return run(self, args)


# ----------------------------------------------------------------------------------------------
# Chunking and the answers file
# ----------------------------------------------------------------------------------------------


def get_chunk(items: Sequence[Any], num_chunks: int, chunk_idx: int) -> Sequence[Any]:
    """The `chunk_idx`-th of `num_chunks` contiguous slices of size ceil(N / K) (the last may be shorter or empty)."""
    if num_chunks < 1:
        raise ValueError(f"--num-chunks must be >= 1, got {num_chunks}")
    if not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in 0..{num_chunks - 1}, got {chunk_idx}")
    size = math.ceil(len(items) / num_chunks)
    return items[chunk_idx * size : (chunk_idx + 1) * size]


def prepare_answers_file(path: Path, model_id: str, overwrite: bool = False) -> Counter[Hashable]:
    """Make `path` ready for appending and return how many answers it holds per key.

    A last line cut short by an interruption is removed (the file stays valid JSONL); any other
    broken line, or answers written by another model, is an error naming the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite or not path.exists():
        path.write_text("", encoding="utf-8")
        return Counter()
    keys: Counter[Hashable] = Counter()
    for line_no, record in read_jsonl_for_append(path):
        if not isinstance(record, dict) or "question_id" not in record:
            raise ValueError(f"{path}:{line_no}: not an answer (no question_id); fix it or pass --overwrite")
        if record.get("model_id") != model_id:
            raise ValueError(
                f"{path}:{line_no}: answer of model {record.get('model_id')!r}, but this run is {model_id!r}; "
                "pass --overwrite or choose another --answers-file"
            )
        keys[answer_key(record)] += 1
    return keys


def build_run_record(
    task: AnswerTask, args: argparse.Namespace, model_id: str, samples: Sequence[Sample] = ()
) -> dict[str, Any]:
    """What this run's answers depend on (see `llava.eval.run_record`); the image files that
    `samples` read are fingerprinted."""
    settings = DecodingSettings.from_args(args)
    image_folder = getattr(args, "image_folder", None) if task.uses_image_folder else None
    prompt = {"single_pred_prompt": bool(args.single_pred_prompt)}
    prompt.update({name: getattr(args, name) for name in task.record_options})
    return {
        "format": run_record.FORMAT,
        "runner": task.name,
        "model_id": model_id,
        **run_record.locations(
            args.model_path,
            args.model_base,
            image_folder,
            [ref.path for sample in samples for ref in sample.images if ref.path is not None],
        ),
        "conv_mode": args.conv_mode,
        "dtype": args.dtype,
        "decoding": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "num_beams": settings.num_beams,
            "max_new_tokens": settings.max_new_tokens,
        },
        "prompt": prompt,
        "question_file": run_record.question_file_identity(args.question_file),
        "chunk": {"num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx},
    }


def prepare_resume(
    answers_file: Path, record: dict[str, Any], model_id: str, overwrite: bool = False
) -> Counter[Hashable]:
    """`prepare_answers_file`, refusing to mix runs: the file's run record must agree with
    `record` on every setting (`run_record.check_resume`), and a file that holds answers but no
    record is refused (nothing tells which run wrote them). Writes `record` beside the file."""
    previous = None
    if not overwrite and answers_file.exists() and answers_file.stat().st_size:
        previous = run_record.read_record(answers_file)
        if previous is not None:
            run_record.check_resume(answers_file, previous, record)
    done = prepare_answers_file(answers_file, model_id, overwrite=overwrite)
    if done and previous is None:
        raise ValueError(
            f"{answers_file} holds {done.total()} answer(s) but no run record "
            f"({run_record.record_path(answers_file).name}), so nothing tells which model and settings "
            "wrote them; pass --overwrite to start it afresh, or choose another --answers-file"
        )
    if overwrite or not done:
        run_record.write_record(answers_file, record)
    return done


def answer_record(sample: Sample, text: str, model_id: str) -> dict[str, Any]:
    return {
        "question_id": sample.question_id,
        "prompt": sample.prompt,
        "text": text,
        **sample.extra,
        "answer_id": short_id(),
        "model_id": model_id,
        "metadata": {},
    }


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What a run did: answers written now, questions already answered, questions skipped."""

    answers_file: Path
    total: int
    answered: int = 0
    resumed: int = 0
    skipped_missing_images: list[QuestionId] = field(default_factory=list)
    skipped_unreadable_images: list[QuestionId] = field(default_factory=list)


def _batches(items: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _load_images(sample: Sample) -> list[Image.Image]:
    images = []
    for ref in sample.images:
        try:
            images.append(ref.load())
        except FileNotFoundError as err:
            raise MissingImageError(
                f"question {sample.question_id!r}: {err} (--skip-missing-images skips such questions)"
            ) from err
        except ImageTooLargeError as err:
            raise ImageTooLargeError(f"question {sample.question_id!r}: {err}") from err
    return images


def pending_samples(samples: Sequence[Sample], done: Counter[Hashable]) -> list[Sample]:
    """The samples still to answer: of the n samples sharing a key, those after the first
    `done[key]` (a repeated question line needs one answer per line)."""
    seen: Counter[Hashable] = Counter()
    pending = []
    for sample in samples:
        seen[sample.key] += 1
        if seen[sample.key] > done[sample.key]:
            pending.append(sample)
    return pending


def run(task: AnswerTask, args: argparse.Namespace) -> RunSummary:
    """Answer this chunk's unanswered questions into `args.answers_file`."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = DecodingSettings.from_args(args)
    records = get_chunk(task.read_records(args), args.num_chunks, args.chunk_idx)
    samples = [sample for record in records for sample in task.to_samples(record, args)]

    answers_file = Path(args.answers_file).expanduser()
    model_id = get_model_name_from_path(args.model_path)
    record = build_run_record(task, args, model_id, samples)
    done = prepare_resume(answers_file, record, model_id, overwrite=args.overwrite)
    pending = pending_samples(samples, done)
    summary = RunSummary(answers_file, total=len(samples), resumed=len(samples) - len(pending))
    logger.info(
        "chunk %d/%d: %d question(s), %d already answered in %s, %d to go",
        args.chunk_idx,
        args.num_chunks,
        len(samples),
        summary.resumed,
        answers_file,
        len(pending),
    )
    if not pending:
        return summary

    loaded = load_model(args)
    with (
        answers_file.open("a", encoding="utf-8") as out,
        tqdm(total=len(pending), desc=model_id, unit="q") as bar,
    ):
        for batch in _batches(pending, args.batch_size):
            ready: list[Sample] = []
            prompts: list[list[int]] = []
            pixels: list[torch.Tensor | None] = []
            for sample in batch:
                try:
                    images = _load_images(sample)
                except (FileNotFoundError, ImageTooLargeError) as err:
                    if not args.skip_missing_images:
                        raise
                    logger.warning("skipping: %s", err)
                    missing = isinstance(err, FileNotFoundError)
                    skipped = summary.skipped_missing_images if missing else summary.skipped_unreadable_images
                    skipped.append(sample.question_id)
                    continue
                ready.append(sample)
                prompts.append(loaded.prompt_ids(open_conversation(args.conv_mode, sample.query)))
                pixels.append(loaded.encode_images(images))
            if ready:
                texts = loaded.generate(prompts, pixels, settings)
                for sample, text in zip(ready, texts, strict=True):
                    out.write(json.dumps(answer_record(sample, text, model_id)) + "\n")
                out.flush()
                summary.answered += len(ready)
            bar.update(len(batch))
    if summary.skipped_missing_images:
        logger.warning(
            "skipped %d question(s) with missing images: %s",
            len(summary.skipped_missing_images),
            summary.skipped_missing_images,
        )
    if summary.skipped_unreadable_images:
        logger.warning(
            "skipped %d question(s) with unreadable (oversized) images: %s",
            len(summary.skipped_unreadable_images),
            summary.skipped_unreadable_images,
        )
    logger.info("wrote %d answer(s) to %s", summary.answered, answers_file)
    return summary


# ----------------------------------------------------------------------------------------------
# LLaVA's question-file format (jsonl), shared by the loader and free-form runners
# ----------------------------------------------------------------------------------------------


def read_question_jsonl(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The question file: one JSON object a line with `question_id`, `image` and `text`."""
    path = Path(args.question_file).expanduser()
    records = []
    for line_no, record in iter_numbered_jsonl(path):
        missing = [name for name in ("question_id", "image", "text") if name not in record]
        if missing:
            raise ValueError(f"{path}:{line_no}: question lacks {missing}")
        records.append(record)
    return records


def question_sample(record: dict[str, Any], args: argparse.Namespace) -> list[Sample]:
    """`<image>\\n{text}` as the user message; the answer file records `text` itself."""
    text = record["text"]
    if args.single_pred_prompt:
        text = text + MULTIPLE_CHOICE_SUFFIX
    image = ImageRef.from_file(os.path.join(args.image_folder, record["image"]))
    return [
        Sample(record["question_id"], prompt=text, query=f"{DEFAULT_IMAGE_TOKEN}\n{text}", images=(image,))
    ]


def question_file_task(name: str, description: str, max_new_tokens: int) -> AnswerTask:
    """A runner on LLaVA's question file (`read_question_jsonl`, one `question_sample` a line)."""
    return AnswerTask(name, description, max_new_tokens, read_question_jsonl, question_sample)
