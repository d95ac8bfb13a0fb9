"""Short-answer exact match: the prediction equals the question's `answer` after normalisation
(strip, lower-case, one trailing period removed). Used by the playground's VQA file; every
question needs exactly one answer (`--allow-missing` scores the answered ones)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.run_record import check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    field,
    index_answers,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)


def normalize_short_answer(text: str) -> str:
    return text.strip().lower().removesuffix(".")


def is_match(prediction: str, answer: str) -> bool:
    return normalize_short_answer(prediction) == normalize_short_answer(answer)


@dataclass(frozen=True)
class ExactMatchScores:
    accuracy: float
    categories: dict[str, float]
    count: int


def score_exact_match(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[str, str], source: str = "questions"
) -> ExactMatchScores:
    """Accuracy x 100 overall and per `category` (when the questions have one), over the
    questions that have a prediction (all of them once `index_predictions` has checked the
    coverage without `--allow-missing`)."""
    if not questions:
        raise ValueError(f"{source}: no questions")
    hits: list[bool] = []
    per_category: dict[str, list[bool]] = {}
    for i, question in enumerate(questions, start=1):
        where = f"{source}: record {i}"
        qid = str(field(question, "question_id", where))
        if qid not in predictions:
            continue
        correct = is_match(predictions[qid], str(field(question, "answer", where)))
        hits.append(correct)
        if "category" in question:
            per_category.setdefault(str(question["category"]), []).append(correct)
    if not hits:
        raise ValueError(f"{source}: no answered questions")
    return ExactMatchScores(
        accuracy=100.0 * sum(hits) / len(hits),
        categories={name: 100.0 * sum(v) / len(v) for name, v in sorted(per_category.items())},
        count=len(hits),
    )


def index_predictions(
    results: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    source: str,
    question_source: str = "questions",
    allow_missing: bool = False,
) -> tuple[dict[str, str], Coverage]:
    """`{question_id (str): text}`, every question answered exactly once."""
    expected = [
        str(field(q, "question_id", f"{question_source}: record {i}"))
        for i, q in enumerate(questions, start=1)
    ]
    by_id, coverage = index_answers(
        results, lambda r, where: str(field(r, "question_id", where)), expected, source, allow_missing
    )
    return {qid: str(field(r, "text", f"{source}: question {qid!r}")) for qid, r in by_id.items()}, coverage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question-file", required=True, help="jsonl with question_id and answer")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--benchmark", default="exact_match", help="name stored in --results-json")
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> ExactMatchScores:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file)
    questions = read_jsonl(args.question_file)
    predictions, coverage = index_predictions(
        read_jsonl(args.result_file), questions, args.result_file, args.question_file, args.allow_missing
    )
    scores = score_exact_match(questions, predictions, args.question_file)
    for name, value in scores.categories.items():
        print(f"{name}: {value:.2f}%")
    print(f"Samples: {scores.count}, Accuracy: {scores.accuracy:.2f}%")
    report_scores(args.results_json, args.benchmark, scores.accuracy, coverage, categories=scores.categories)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
