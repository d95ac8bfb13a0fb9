"""Question files for the benchmarks that ship no LLaVA question file: OCRBench, AI2D, MMStar and
VQAv2 val, each made from the benchmark's own release files with the prompt its protocol uses.

    python -m llava.eval.question_files ocrbench --annotation-file OCRBench.json --out Q.jsonl
    python -m llava.eval.question_files ai2d --parquet data/test-*.parquet --image-dir IMAGES --out Q.jsonl
    python -m llava.eval.question_files mmstar --parquet mmstar.parquet --image-dir IMAGES --out Q.jsonl
    python -m llava.eval.question_files vqav2_val --questions v2_OpenEnded_mscoco_val2014_questions.json --out Q.jsonl

Each line is LLaVA's question format (`question_id`, `image` relative to the image folder, `text`
with the prompt suffix inside) for `llava.eval.model_vqa_loader`; the multiple-choice files also
hold the `answer` letter (and MMStar its categories), which their scorers read back. AI2D and
MMStar come as Hugging Face parquet files with the images inside; their images are written to
`--image-dir`. The file is written whole or not at all (a temporary file renamed into place).

Sources of the prompts and fields:
- OCRBench: https://github.com/Yuliang-Liu/MultimodalOCR (OCRBench/example.py,
  OCRBench/json_files/OCRBench.json): the question as given. Its `id` repeats across source
  datasets, so the question id is the record's position in the file.
- AI2D: lmms-eval's `ai2d` task (dataset lmms-lab/ai2d: question, options, answer = option index,
  image): `{question}\\nA. {option}\\nB. ...` and the multiple-choice suffix.
- MMStar: lmms-eval's `mmstar` task (dataset Lin-Chen/MMStar, mmstar.parquet: index, question with
  its options inside, answer letter, category, l2_category, image): the stripped question, " Please
  answer yes or no." removed, then lmms-eval's post-prompt, which has no final period.
- VQAv2 val: the official questions file (https://visualqa.org/download.html) and LLaVA-1.5's
  short-answer suffix; images `COCO_<data_subtype>_<image id, 12 digits>.jpg`.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from llava.eval.prompts import MULTIPLE_CHOICE_SUFFIX, SHORT_ANSWER_SUFFIX
from llava.eval.scoring_io import field, read_json

logger = logging.getLogger(__name__)

# lmms-eval's `mmstar` post-prompt, as its task defines it (no final period), and the phrase it
# removes from a question before appending it.
MMSTAR_SUFFIX = "\nAnswer with the option's letter from the given choices directly"
MMSTAR_REMOVED_PHRASE = " Please answer yes or no."
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Pillow's format name -> file suffix of the extracted image.
IMAGE_SUFFIXES = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif"}

Record = dict[str, Any]


def _text(record: Mapping[str, Any], name: str, where: str) -> str:
    value = field(record, name, where)
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} should be text, got {type(value).__name__} {value!r}")
    return value


def write_question_file(path: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write the question jsonl whole: to a temporary file, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    logger.info("wrote %d questions to %s", len(records), path)
    return path


# --- OCRBench -----------------------------------------------------------------------------


def ocrbench_questions(entries: Any, source: str = "OCRBench.json") -> list[Record]:
    """One question per record of OCRBench.json, in its order; `question_id` is the position."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: expected a non-empty JSON list of OCRBench records")
    records = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        records.append(
            {
                "question_id": i,
                "image": _text(entry, "image_path", where),
                "text": _text(entry, "question", where),
                "category": _text(entry, "type", where),
            }
        )
    return records


# --- VQAv2 val ----------------------------------------------------------------------------


def vqav2_questions(data: Any, source: str = "questions file") -> list[Record]:
    """One question per entry of an official VQAv2 questions file, in its order, with the
    short-answer suffix; the image is `COCO_<data_subtype>_<image id:012d>.jpg`."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected the official VQA questions object")
    subtype = _text(data, "data_subtype", source)
    records: list[Record] = []
    seen: set[Any] = set()
    for i, question in enumerate(field(data, "questions", source)):
        where = f"{source}: questions[{i}]"
        qid, image_id = field(question, "question_id", where), field(question, "image_id", where)
        if not isinstance(image_id, int):
            raise ValueError(f"{where}: image_id should be an integer, got {image_id!r}")
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} appears twice")
        seen.add(qid)
        records.append(
            {
                "question_id": qid,
                "image": f"COCO_{subtype}_{image_id:012d}.jpg",
                "text": _text(question, "question", where) + SHORT_ANSWER_SUFFIX,
                "category": "default",
            }
        )
    if not records:
        raise ValueError(f"{source}: no questions")
    return records


# --- Parquet rows with images (AI2D, MMStar) ------------------------------------------------


def iter_parquet_rows(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[str, dict[str, Any]]]:
    """`(where, row)` for every row of the parquet files, the files in name order (the order the
    `datasets` library reads a split's shards in); `where` is "file: row k"."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading the benchmark's parquet files needs pyarrow: pip install -e .[eval]"
        ) from err
    for path in sorted(map(str, paths)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such parquet file")
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", record
                row += 1


def save_image(cell: Any, folder: Path, stem: str, where: str) -> str:
    """Write a parquet image cell (`{"bytes", "path"}`, the `datasets` Image layout) to
    `folder/<stem>.<suffix>`, the suffix from the image's own format; returns the file name."""
    data = cell.get("bytes") if isinstance(cell, Mapping) else None
    if not data:
        raise ValueError(f"{where}: the image cell holds no image bytes ({cell!r:.80})")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or ""
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: the image bytes are not a readable image ({err})") from err
    name = f"{stem}.{IMAGE_SUFFIXES.get(image_format, image_format.lower())}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return name


def multiple_choice_text(question: str, options: Sequence[str]) -> str:
    """`{question}\\nA. {option}\\nB. {option}...` and the multiple-choice suffix (lmms-eval's
    AI2D `mcq` format)."""
    lines = [f"{OPTION_LETTERS[k]}. {option}" for k, option in enumerate(options)]
    return f"{question}\n" + "\n".join(lines) + MULTIPLE_CHOICE_SUFFIX


def ai2d_question(row: Mapping[str, Any], qid: int, image: str, where: str) -> Record:
    """A question line of an lmms-lab/ai2d row; `answer` is the option index made a letter."""
    question, options = _text(row, "question", where), field(row, "options", where)
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise ValueError(f"{where}: options should be a non-empty list of text, got {options!r}")
    if len(options) > len(OPTION_LETTERS):
        raise ValueError(f"{where}: {len(options)} options, more than there are letters")
    answer = field(row, "answer", where)
    try:
        index = int(answer)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: answer {answer!r} is not an option index") from None
    if not 0 <= index < len(options):
        raise ValueError(f"{where}: answer {answer!r} is outside the {len(options)} options")
    return {
        "question_id": qid,
        "image": image,
        "text": multiple_choice_text(question, options),
        "answer": OPTION_LETTERS[index],
    }


def ai2d_questions(parquet: Sequence[str | os.PathLike], image_dir: str | os.PathLike) -> list[Record]:
    """AI2D questions from lmms-lab/ai2d's parquet shards; the question id is the row's position
    over the shards (read in name order), its image `<id>.<suffix>` in `image_dir`."""
    records = []
    for qid, (where, row) in enumerate(iter_parquet_rows(parquet)):
        image = save_image(field(row, "image", where), Path(image_dir), str(qid), where)
        records.append(ai2d_question(row, qid, image, where))
    if not records:
        raise ValueError(f"{', '.join(map(str, parquet))}: no rows")
    return records


def mmstar_question(row: Mapping[str, Any], image: str, where: str) -> Record:
    """A question line of a Lin-Chen/MMStar row, with lmms-eval's prompt."""
    question = _text(row, "question", where).strip().replace(MMSTAR_REMOVED_PHRASE, "")
    return {
        "question_id": field(row, "index", where),
        "image": image,
        "text": question + MMSTAR_SUFFIX,
        "answer": _text(row, "answer", where),
        "category": _text(row, "category", where),
        "l2_category": _text(row, "l2_category", where),
    }


def mmstar_questions(parquet: Sequence[str | os.PathLike], image_dir: str | os.PathLike) -> list[Record]:
    """MMStar questions from mmstar.parquet; the question id is the row's `index`."""
    records: list[Record] = []
    seen: set[Any] = set()
    for where, row in iter_parquet_rows(parquet):
        index = field(row, "index", where)
        if index in seen:
            raise ValueError(f"{where}: index {index!r} appears twice")
        seen.add(index)
        image = save_image(field(row, "image", where), Path(image_dir), str(index), where)
        records.append(mmstar_question(row, image, where))
    if not records:
        raise ValueError(f"{', '.join(map(str, parquet))}: no rows")
    return records


# --- Command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    ocr = sub.add_parser("ocrbench", help="from OCRBench.json")
    ocr.add_argument("--annotation-file", required=True, help="OCRBench.json")
    vqa = sub.add_parser("vqav2_val", help="from the official VQAv2 questions file")
    vqa.add_argument("--questions", required=True, help="v2_OpenEnded_mscoco_val2014_questions.json")
    for name, source in (
        ("ai2d", "lmms-lab/ai2d data/test-*.parquet"),
        ("mmstar", "Lin-Chen/MMStar mmstar.parquet"),
    ):
        mc = sub.add_parser(name, help=f"from {source}")
        mc.add_argument("--parquet", nargs="+", required=True, help=source)
        mc.add_argument("--image-dir", required=True, help="where the images are written")
    for command in sub.choices.values():
        command.add_argument("--out", required=True, help="the question file (jsonl) to write")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    if args.benchmark == "ocrbench":
        records = ocrbench_questions(read_json(args.annotation_file), args.annotation_file)
    elif args.benchmark == "vqav2_val":
        records = vqav2_questions(read_json(args.questions), args.questions)
    elif args.benchmark == "ai2d":
        records = ai2d_questions(args.parquet, args.image_dir)
    else:
        records = mmstar_questions(args.parquet, args.image_dir)
    return write_question_file(args.out, records)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
