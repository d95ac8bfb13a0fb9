"""Helpers for the evaluation tests: small writers for the benchmark file formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def write_json():
    return _write_json


# An MMBench dev TSV: three base questions with their rotated copies (index + k * 1,000,000).
COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category", "comment", "split"]  # fmt: skip
BIG_IMAGE = "iVBOR" + "A" * 200_000  # above csv's default 128 KiB field limit


def row(index, answer, options, category, question="Q?"):
    opts = list(options) + [""] * (4 - len(options))
    values = [index, question, "", *opts, answer, category, BIG_IMAGE, "src", "l2", "", "dev"]
    return dict(zip(COLUMNS, map(str, values), strict=True))


def write_tsv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


MMBENCH_ROWS = [
    # base 0 (ocr, 3 options): every rotated copy answered right -> passes
    row(0, "A", ["cat", "dog", "cow"], "ocr"),
    row(1_000_000, "C", ["dog", "cow", "cat"], "ocr"),
    row(2_000_000, "B", ["cow", "cat", "dog"], "ocr"),
    # base 1 (ocr, 2 options): the copy is wrong -> fails
    row(1, "B", ["yes", "no"], "ocr"),
    row(1_000_001, "A", ["no", "yes"], "ocr"),
    # base 2 (logic, 4 options): one copy answered wrong -> fails
    row(2, "D", ["1", "2", "3", "a red car"], "logic"),
    row(1_000_002, "A", ["a red car", "1", "2", "3"], "logic"),
    row(2_000_002, "B", ["3", "a red car", "1", "2"], "logic"),
    row(3_000_002, "C", ["2", "3", "a red car", "1"], "logic"),
]


@pytest.fixture
def mmbench_tsv(tmp_path) -> tuple[Path, list[dict[str, str]]]:
    return write_tsv(tmp_path / "mmbench_dev_20230712.tsv", MMBENCH_ROWS), MMBENCH_ROWS


@pytest.fixture
def mmbench_row():
    return row


@pytest.fixture
def write_mmbench_tsv():
    return write_tsv
