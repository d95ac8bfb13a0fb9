"""MMBench / MMBench-CN local scorer for dev splits (circular evaluation) and the TSV reader.

Protocol: https://github.com/open-compass/MMBench (CircularEval) and
https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (MMBench). The dev TSV already
holds the rotated copies of each question (index = base + k * 1,000,000, each with its own
`answer`); a base question counts as right only when every copy is answered right. Predictions
are parsed to a letter locally; the official server additionally uses an LLM to extract choices
from free-form answers, which LLaVA-1.5's letter answers do not need.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval.scoring_io import read_jsonl, write_results_json

logger = logging.getLogger(__name__)

CIRCULAR_STRIDE = 1_000_000
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.):：]|$)")
_ANSWER_IS = re.compile(r"answer is \(?([A-Z])\b")


def read_mmbench_tsv(path: str | Path) -> list[dict[str, str]]:
    """Rows of an MMBench TSV (base64 images included) as dicts of strings, via the stdlib."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: no rows")
    for name in ("index", "question", "A", "B"):
        if name not in rows[0]:
            raise ValueError(f"{path}: missing column {name!r} (has {list(rows[0])})")
    return rows


def row_options(row: Mapping[str, str]) -> list[str]:
    """Option letters of a row: columns A-D up to the first empty one."""
    letters = []
    for letter in OPTION_LETTERS:
        if not (row.get(letter) or "").strip():
            break
        letters.append(letter)
    return letters


def parse_choice(text: str, row: Mapping[str, str]) -> str | None:
    """Letter chosen in `text`: a leading letter ("B", "B.", "(B)"), else one
    "answer is B", else the single option whose text equals the prediction; None otherwise."""
    letters = row_options(row)
    text = text.strip()
    leading = _LEADING_LETTER.match(text)
    if leading and leading.group(1) in letters:
        return leading.group(1)
    stated = _ANSWER_IS.findall(text)
    if len(stated) == 1 and stated[0] in letters:
        return stated[0]
    same = [letter for letter in letters if row[letter].strip().lower() == text.rstrip(".").lower()]
    return same[0] if len(same) == 1 else None


@dataclass(frozen=True)
class MMBenchScores:
    circular: float
    vanilla: float
    categories: dict[str, float]
    num_questions: int


def score_mmbench(
    rows: Sequence[Mapping[str, str]], predictions: Mapping[int, str], source: str
) -> MMBenchScores:
    """Circular accuracy x 100 overall and per category, plus vanilla accuracy on base rows."""
    if "answer" not in rows[0]:
        raise ValueError(f"{source}: no 'answer' column; only dev splits can be scored locally")
    groups: dict[int, list[bool]] = {}
    group_category: dict[int, str] = {}
    vanilla: list[bool] = []
    missing = 0
    for row in rows:
        index = int(row["index"])
        base = index % CIRCULAR_STRIDE
        text = predictions.get(index)
        missing += text is None
        correct = text is not None and parse_choice(text, row) == row["answer"].strip()
        groups.setdefault(base, []).append(correct)
        group_category.setdefault(base, row.get("category", "") or "unknown")
        if index < CIRCULAR_STRIDE:
            vanilla.append(correct)
    if missing:
        logger.warning("%s: %d of %d rows have no prediction; counted wrong", source, missing, len(rows))
    per_category: dict[str, list[bool]] = {}
    for base, hits in groups.items():
        per_category.setdefault(group_category[base], []).append(all(hits))
    passed = [all(hits) for hits in groups.values()]
    return MMBenchScores(
        circular=100.0 * sum(passed) / len(passed),
        vanilla=100.0 * sum(vanilla) / len(vanilla) if vanilla else 0.0,
        categories={name: 100.0 * sum(v) / len(v) for name, v in sorted(per_category.items())},
        num_questions=len(groups),
    )


def load_predictions(result_file: str | Path) -> dict[int, str]:
    predictions = {}
    for i, record in enumerate(read_jsonl(result_file), start=1):
        if "question_id" not in record or "text" not in record:
            raise ValueError(f"{result_file}: record {i} needs 'question_id' and 'text'")
        predictions[int(record["question_id"])] = record["text"]
    return predictions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="dev TSV with the 'answer' column")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--benchmark", default="mmbench", choices=("mmbench", "mmbench_cn"))
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> MMBenchScores:
    args = build_parser().parse_args(argv)
    rows = read_mmbench_tsv(args.annotation_file)
    scores = score_mmbench(rows, load_predictions(args.result_file), args.annotation_file)
    for name, value in scores.categories.items():
        print(f"{name}: {value:.2f}%")
    print(
        f"Questions: {scores.num_questions}, Circular accuracy: {scores.circular:.2f}%, "
        f"Vanilla accuracy: {scores.vanilla:.2f}%"
    )
    details: dict[str, Any] = {"vanilla": scores.vanilla, "categories": scores.categories}
    write_results_json(args.results_json, args.benchmark, scores.circular, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
