"""The playground's data stage: images, captions, instruction data and eval files in LLaVA-1.5's
formats, so the project's real training entry point and eval runners read them (layout:
`PlaygroundData`; docs/playground.md). Train and eval scenes come from different random streams,
and a training scene whose content equals an evaluation scene's is redrawn. The directory is a
stage of `llava.playground.stages`, keyed on the seed and the sizes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.scoring_io import write_json, write_jsonl
from llava.playground import tasks
from llava.playground.scenes import DIGITS, Scene, render_scene, sample_scenes
from llava.playground.stages import read_record, run_stage

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2

# The instruction mix of every preset and the comparison's digits (five of the ten the
# backbones learnt); docs/playground_history.md has the runs behind these values.
YES_NO_RATIO = 0.75
CATEGORY_WEIGHTS = {"OCR": 1.5, "numerical_calculation": 2.0}
COMPARISON_DIGITS = (0, 1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class DataSizes:
    """How much data a preset writes."""

    pretrain_images: int  # caption pairs for LLaVA-1.5's alignment stage
    train_images: int  # instruction conversations with an image
    text_only: int  # instruction conversations without an image (scene described in words)
    max_turns: int  # questions per instruction conversation (1..max_turns)
    mme_images_per_category: int  # 2 yes/no questions each
    vqa_per_category: int  # short-answer questions per category (one image each)
    yes_no_ratio: float = YES_NO_RATIO  # share of yes/no questions in the instruction conversations
    # relative odds of each category's questions in the instruction conversations (None: 1 each)
    category_weights: dict[str, float] | None = dataclasses.field(
        default_factory=lambda: dict(CATEGORY_WEIGHTS)
    )
    digits: tuple[int, ...] = COMPARISON_DIGITS  # the digits scenes hold (a subset of the world's 0-9)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digits", tuple(self.digits))  # a list read back from JSON
        digits, weights = self.digits, self.category_weights or {}
        if len(set(digits)) != len(digits) or len(digits) < 2 or not set(digits) <= set(DIGITS):
            raise ValueError(
                f"DataSizes.digits must be two or more distinct digits of {DIGITS}, got {digits}"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and value < (1 if field.name == "max_turns" else 0):
                raise ValueError(f"DataSizes.{field.name} must be non-negative (max_turns >= 1), got {value}")
        if not 0.0 <= self.yes_no_ratio <= 1.0:
            raise ValueError(f"DataSizes.yes_no_ratio must be in [0, 1], got {self.yes_no_ratio}")
        if any(c not in tasks.CATEGORIES or not w > 0 for c, w in weights.items()):
            raise ValueError(
                f"DataSizes.category_weights {weights}: each key must be one of {tasks.CATEGORIES} "
                "and each weight positive"
            )


@dataclasses.dataclass(frozen=True)
class PlaygroundData:
    """Where `build_data` put everything (absolute paths): `image_folder` is training's `--image_folder`
    for both json files, `mme_dir` laid out as MME's release (images and `questions_answers_YN`)."""

    root: Path
    image_folder: Path
    pretrain_json: Path
    instruct_json: Path
    mme_question_file: Path
    mme_dir: Path
    vqa_question_file: Path
    vqa_image_folder: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> PlaygroundData:
        """The paths of a data directory laid out by `build_data` (nothing is checked or read)."""
        root = Path(root).resolve()
        mme, vqa = root / "eval" / "MME", root / "eval" / "vqa"
        return cls(
            root=root,
            image_folder=root / "images",
            pretrain_json=root / "llava_pretrain.json",
            instruct_json=root / "llava_instruct_mix.json",
            mme_question_file=mme / "llava_mme.jsonl",
            mme_dir=mme / "MME_Benchmark_release_version",
            vqa_question_file=vqa / "llava_vqa.jsonl",
            vqa_image_folder=vqa / "images",
        )


def rng_for(seed: int, stream: str) -> random.Random:
    """An independent, reproducible random stream per (seed, purpose)."""
    return random.Random(f"inverse-llava-playground/{seed}/{stream}")


def scene_conversation(
    scene: Scene, questions: list[tasks.Question], with_image: bool
) -> list[dict[str, str]]:
    """LLaVA-format turns for `questions` about `scene`. The first human turn starts with the
    image placeholder (`<image>\\n`) when `with_image`, else with the scene described in words
    (`Scene.describe()` and a newline): what the chat LM is pre-trained on."""
    first = DEFAULT_IMAGE_TOKEN if with_image else scene.describe()
    turns: list[dict[str, str]] = []
    for i, question in enumerate(questions):
        text = f"{first}\n{question.text}" if i == 0 else question.text
        turns += [{"from": "human", "value": text}, {"from": "gpt", "value": question.answer}]
    return turns


def _save_images(scenes: list[Scene], paths: list[Path], desc: str) -> None:
    for scene, path in tqdm(list(zip(scenes, paths, strict=True)), desc=desc, leave=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        render_scene(scene).save(path)


def read_sizes(root: str | os.PathLike) -> DataSizes:
    """The `DataSizes` a finished data directory was built with."""
    record = read_record(Path(root))
    if record is None:
        raise FileNotFoundError(f"{root} is not a finished playground data directory (no DONE.json)")
    return DataSizes(**record["settings"]["sizes"])


def build_data(output_dir: str | os.PathLike, sizes: DataSizes, seed: int = 0) -> PlaygroundData:
    """Generate the playground's data stage into `output_dir` and return its paths.

    Deterministic: the same seed and sizes write byte-identical files. A finished build with the
    same seed and sizes is reused, one with other settings is refused, an interrupted one is
    rebuilt (`llava.playground.stages.run_stage`).
    """
    paths = PlaygroundData.at(output_dir)

    def work(root: Path) -> dict:
        logger.info("playground data: writing seed %d, %s into %s", seed, sizes, root)
        eval_keys = _write_mme(paths, seed, sizes) | _write_vqa(paths, seed, sizes)
        _write_pretrain(paths, seed, sizes, eval_keys)
        _write_instruct(paths, seed, sizes, eval_keys)
        return {}

    settings = {"format_version": FORMAT_VERSION, "seed": seed, "sizes": dataclasses.asdict(sizes)}
    run_stage(paths.root, "playground data", work, settings)
    return paths


def _category_scenes(
    seed: int, stream: str, n: int, digits: tuple[int, ...], image_path: Callable[[str, int, int], Path]
) -> Iterator[tuple[str, random.Random, list[tuple[Scene, Path]]]]:
    """Per category: its random stream and `n` askable scenes, saved at `image_path(category,
    index in the category, index overall)`."""
    for k, category in enumerate(tasks.CATEGORIES):
        rng = rng_for(seed, f"{stream}/{category}")
        scenes = [tasks.askable_scene(rng, category, digits) for _ in range(n)]
        image_paths = [image_path(category, i, k * n + i) for i in range(n)]
        _save_images(scenes, image_paths, f"{stream.upper()} {category}")
        yield category, rng, list(zip(scenes, image_paths, strict=True))


def _write_mme(paths: PlaygroundData, seed: int, sizes: DataSizes) -> set[tuple]:
    rows: list[dict] = []
    keys: set[tuple] = set()
    folder = paths.mme_dir
    per_category = sizes.mme_images_per_category
    for category, rng, scenes in _category_scenes(
        seed, "mme", per_category, sizes.digits, lambda c, i, _: folder / c / "images" / f"{i:06d}.png"
    ):
        for i, (scene, image_path) in enumerate(scenes):
            keys.add(scene.key)
            pair = tasks.yes_no_pair(scene, category, rng, sizes.digits)
            if rng.random() < 0.5:  # yes first or no first, as in MME
                pair = pair[::-1]
            qid = image_path.relative_to(folder).as_posix()
            gt_path = folder / category / "questions_answers_YN" / f"{i:06d}.txt"
            gt_path.parent.mkdir(parents=True, exist_ok=True)
            gt_path.write_text("".join(f"{q.text}\t{q.answer}\n" for q in pair))
            rows += [{"question_id": qid, "image": qid, "text": q.text, "category": category} for q in pair]
    write_jsonl(paths.mme_question_file, rows)
    return keys


def _write_vqa(paths: PlaygroundData, seed: int, sizes: DataSizes) -> set[tuple]:
    rows: list[dict] = []
    keys: set[tuple] = set()
    folder = paths.vqa_image_folder
    for category, rng, scenes in _category_scenes(
        seed, "vqa", sizes.vqa_per_category, sizes.digits, lambda c, i, n: folder / f"{n:06d}.png"
    ):
        for scene, image_path in scenes:
            keys.add(scene.key)
            question = tasks.short_question(scene, category, rng)
            row = {"question_id": len(rows), "image": image_path.name, "text": question.text}
            rows.append(row | {"category": category, "answer": question.answer})
    write_jsonl(paths.vqa_question_file, rows)
    return keys


def _write_pretrain(paths: PlaygroundData, seed: int, sizes: DataSizes, eval_keys: set[tuple]) -> None:
    """Caption pairs for LLaVA-1.5's alignment stage, each caption the scene in the chat LM's own
    words (`Scene.describe`), as LCS-558K's captions are text that Vicuna models well."""
    scenes = sample_scenes(rng_for(seed, "pretrain"), sizes.pretrain_images, eval_keys, sizes.digits)
    names = [f"pretrain/{i:06d}.png" for i in range(len(scenes))]
    _save_images(scenes, [paths.image_folder / name for name in names], "caption images")
    records = [
        {
            "id": f"pretrain-{i:06d}",
            "image": name,
            "conversations": [
                {"from": "human", "value": DEFAULT_IMAGE_TOKEN},
                {"from": "gpt", "value": scene.describe()},
            ],
        }
        for i, (scene, name) in enumerate(zip(scenes, names, strict=True))
    ]
    write_json(paths.pretrain_json, records, indent=1)


def _write_instruct(paths: PlaygroundData, seed: int, sizes: DataSizes, eval_keys: set[tuple]) -> None:
    rng = rng_for(seed, "instruct")
    scenes = sample_scenes(rng, sizes.train_images + sizes.text_only, eval_keys, sizes.digits)
    names = [f"train/{i:06d}.png" for i in range(sizes.train_images)]
    _save_images(
        scenes[: sizes.train_images], [paths.image_folder / name for name in names], "instruction images"
    )
    records: list[dict] = []
    for i, scene in enumerate(scenes):
        n = rng.randint(1, sizes.max_turns)
        weights, digits = sizes.category_weights, sizes.digits
        questions = tasks.sample_questions(
            scene, rng, n, yes_no_ratio=sizes.yes_no_ratio, weights=weights, digits=digits
        )
        with_image = i < sizes.train_images
        record = (
            {"id": f"train-{i:06d}", "image": names[i]}
            if with_image
            else {"id": f"text-{i - sizes.train_images:06d}"}
        )
        records.append(record | {"conversations": scene_conversation(scene, questions, with_image)})
    rng.shuffle(records)
    write_json(paths.instruct_json, records, indent=1)
