"""Small release files of OCRBench, AI2D, MMStar and VQAv2 val, written in each benchmark's own
layout, for the question-file, scorer, script and runner tests.

- OCRBench.json: a JSON list of records `{dataset_name, id, image_path, question, answers, type}`,
  `answers` a text or a list of texts, `id` repeating across source datasets
  (https://github.com/Yuliang-Liu/MultimodalOCR, OCRBench/json_files/OCRBench.json).
- AI2D: lmms-lab/ai2d's parquet shards `data/test-0000k-of-0000n.parquet`, columns question,
  options (list), answer (the option index as text), image (`{bytes, path}`, the `datasets` Image
  layout).
- MMStar: Lin-Chen/MMStar's `mmstar.parquet`, columns index, question (options inside), image,
  answer (letter), category, l2_category, meta_info (`{source, split, image_path}`).
- VQAv2: the official `v2_OpenEnded_mscoco_val2014_questions.json` and
  `v2_mscoco_val2014_annotations.json` objects, ten answers a question.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# Eight OCRBench records over all five groups; ids 211 repeat, as in the real file. The comments
# give the constant script answer's and the hand-made answers' outcomes (see test_ocrbench.py).
OCRBENCH_RECORDS: list[dict[str, Any]] = [
    {"dataset_name": "IIIT5K", "id": 211, "image_path": "IIIT5K/test/137_3.png",
     "question": "what is written in the image?", "answers": "CENTRE", "type": "Regular Text Recognition"},
    {"dataset_name": "IC13_857", "id": 211, "image_path": "IC13_857/imgs/000000212.jpg",
     "question": "what is written in the image?", "answers": "richtungsangabe", "type": "Regular Text Recognition"},
    {"dataset_name": "IC15_1811", "id": 0, "image_path": "IC15_1811/imgs/000000001.jpg",
     "question": "what is written in the image?", "answers": "JOINT", "type": "Irregular Text Recognition"},
    {"dataset_name": "STVQA", "id": 37, "image_path": "STVQA/test/37.jpg",
     "question": "what is the name of the store?", "answers": ["Tesco", "TESCO Express"],
     "type": "Scene Text-centric VQA"},
    {"dataset_name": "docVQA", "id": 52, "image_path": "docVQA/val/52.png",
     "question": "what is the date of the letter?", "answers": ["12/04/1998"], "type": "Doc-oriented VQA"},
    {"dataset_name": "FUNSD", "id": 9, "image_path": "FUNSD/test/9.png",
     "question": "what is the name in the form?", "answers": "john smith", "type": "Key Information Extraction"},
    {"dataset_name": "HME100k", "id": 22850, "image_path": "HME100K/test/test_images/test_27807.jpg",
     "question": "Please write out the expression of the formula in the image using LaTeX format.",
     "answers": ["x _ { 1 } = 0\n", "x _ 1 = 0\n"], "type": "Handwritten Mathematical Expression Recognition"},
    {"dataset_name": "HME100k", "id": 22449, "image_path": "HME100K/test/test_images/test_27314.jpg",
     "question": "Please write out the expression of the formula in the image using LaTeX format.",
     "answers": "m > \\frac { 2 } { 3 }\n", "type": "Handwritten Mathematical Expression Recognition"},
]  # fmt: skip

# AI2D rows (without their image) and the letters of their answers.
AI2D_ROWS: list[dict[str, Any]] = [
    {"question": "Which label shows the sun?", "options": ["moon", "sun", "earth", "star"], "answer": "1"},
    {"question": "What does the arrow point to?", "options": ["leaf", "root", "stem"], "answer": "2"},
    {"question": "Which stage comes first?", "options": ["egg", "larva", "pupa", "adult"], "answer": "0"},
]
AI2D_LETTERS = ["B", "C", "A"]

MMSTAR_QUESTION = (
    "Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is "
    "on the book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The "
    "suitcase is beneath the book."
)
# MMStar rows (without their image): index, question, answer, category, l2_category.
MMSTAR_ROWS: list[dict[str, Any]] = [
    {"index": 0, "question": MMSTAR_QUESTION, "answer": "A", "category": "coarse perception",
     "l2_category": "image emotion"},
    {"index": 1, "question": "Is the man happy? Please answer yes or no.\nOptions: A: yes, B: no", "answer": "B",
     "category": "coarse perception", "l2_category": "image emotion"},
    {"index": 2, "question": " How many apples are there?\nOptions: A: 1, B: 2, C: 3, D: 4 ", "answer": "C",
     "category": "fine-grained perception", "l2_category": "object counting"},
    {"index": 7, "question": "What is the area of the square?\nOptions: A: 4, B: 8, C: 16, D: 2", "answer": "A",
     "category": "math", "l2_category": "geometry"},
]  # fmt: skip

VQAV2_QUESTIONS: list[dict[str, Any]] = [
    {"image_id": 262148, "question": "Is the sky blue?", "question_id": 262148000},
    {"image_id": 262148, "question": "How many dogs are there?", "question_id": 262148001},
    {"image_id": 393225, "question": "What is he eating?", "question_id": 393225000},
    {"image_id": 393225, "question": "What animal is this?", "question_id": 393225001},
    {"image_id": 9, "question": "What is the man wearing?", "question_id": 9000},
]
# Per question: answer type, question type, the ten human answers.
VQAV2_ANSWERS: list[tuple[str, str, list[str]]] = [
    ("yes/no", "is the", ["yes"] * 10),
    ("number", "how many", ["2", "2", "two", "two", "two", "3", "3", "3", "3", "3"]),
    ("other", "what is", ["hot-dog"] + ["hot dog"] * 2 + ["sandwich"] * 7),
    ("other", "what animal is", ["dog"] * 10),
    ("other", "what is", ["t-shirt"] * 10),
]


def image_bytes(colour: str = "red", size: tuple[int, int] = (12, 9), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4), encoding="utf-8")
    return path


def write_images(folder: Path, names: list[str]) -> None:
    """A small PNG under each relative name (the suffix does not change how it is read)."""
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(("red", "blue", "green", "white")[k % 4], (12 + k, 9)))


def write_ocrbench(folder: Path, images: bool = False) -> Path:
    """`folder/OCRBench.json` (and, with `images`, `folder/OCRBench_Images/...`)."""
    if images:
        write_images(folder / "OCRBench_Images", [r["image_path"] for r in OCRBENCH_RECORDS])
    return write_json(folder / "OCRBench.json", OCRBENCH_RECORDS)


def _image_cell(k: int) -> dict[str, Any]:
    fmt = "PNG" if k % 2 == 0 else "JPEG"
    return {"bytes": image_bytes(("red", "blue", "green", "white")[k % 4], (10 + k, 8), fmt), "path": None}


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# The `datasets` Image feature in parquet, and the two benchmarks' schemas.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
AI2D_SCHEMA = pa.schema(
    [
        ("question", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("image", IMAGE_TYPE),
    ]
)
MMSTAR_SCHEMA = pa.schema(
    [("index", pa.int64()), ("question", pa.string()), ("image", IMAGE_TYPE), ("answer", pa.string()),
     ("category", pa.string()), ("l2_category", pa.string()),
     ("meta_info", pa.struct([("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())]))]
)  # fmt: skip


def write_ai2d(folder: Path, rows: list[dict[str, Any]] | None = None) -> list[Path]:
    """The rows in two shards, `folder/data/test-0000{0,1}-of-00002.parquet` (first row in the
    first shard), each row with an image (PNG and JPEG alternately)."""
    full = [{**row, "image": _image_cell(k)} for k, row in enumerate(AI2D_ROWS if rows is None else rows)]
    return [
        write_parquet(folder / "data" / f"test-{k:05d}-of-00002.parquet", shard, AI2D_SCHEMA)
        for k, shard in enumerate([full[:1], full[1:]])
    ]


def write_mmstar(folder: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """`folder/mmstar.parquet` with the rows, each with an image and its meta_info."""
    full = [
        {**row, "image": _image_cell(k),
         "meta_info": {"source": "SEEDBench_IMG", "split": "val", "image_path": f"images/{row['index']}.jpg"}}
        for k, row in enumerate(MMSTAR_ROWS if rows is None else rows)
    ]  # fmt: skip
    return write_parquet(folder / "mmstar.parquet", full, MMSTAR_SCHEMA)


def write_vqav2(folder: Path, images: bool = False) -> tuple[Path, Path]:
    """The official val questions and annotations files in `folder` (and, with `images`,
    `folder/val2014/COCO_val2014_<id>.jpg`)."""
    questions = {
        "info": {"description": "This is v2.0 of the VQA dataset."},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"},
        "data_subtype": "val2014",
        "questions": VQAV2_QUESTIONS,
    }  # fmt: skip
    annotations = {
        "info": questions["info"],
        "license": questions["license"],
        "data_subtype": "val2014",
        "data_type": "mscoco",
        "annotations": [
            {
                "question_type": question_type,
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": answer, "answer_confidence": "yes", "answer_id": k}
                    for k, answer in enumerate(answers, start=1)
                ],
                "image_id": question["image_id"],
                "answer_type": answer_type,
                "question_id": question["question_id"],
            }
            for question, (answer_type, question_type, answers) in zip(
                VQAV2_QUESTIONS, VQAV2_ANSWERS, strict=True
            )
        ],
    }
    if images:
        names = sorted({f"COCO_val2014_{q['image_id']:012d}.jpg" for q in VQAV2_QUESTIONS})
        write_images(folder / "val2014", names)
    return (
        write_json(folder / "v2_OpenEnded_mscoco_val2014_questions.json", questions),
        write_json(folder / "v2_mscoco_val2014_annotations.json", annotations),
    )
