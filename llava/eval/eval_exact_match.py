"""Short-answer exact match: the prediction equals the question's `answer` after normalisation
(strip, lower-case, one trailing period removed). Used by the playground's VQA file; a question
without a prediction counts as wrong."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.scoring_io import field, read_jsonl, write_results_json

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
    """Accuracy x 100 overall and per `category` (when the questions have one)."""
    if not questions:
        raise ValueError(f"{source}: no questions")
    hits: list[bool] = []
    per_category: dict[str, list[bool]] = {}
    missing = 0
    for i, question in enumerate(questions, start=1):
        where = f"{source}: record {i}"
        qid = str(field(question, "question_id", where))
        missing += qid not in predictions
        correct = qid in predictions and is_match(predictions[qid], str(field(question, "answer", where)))
        hits.append(correct)
        if "category" in question:
            per_category.setdefault(str(question["category"]), []).append(correct)
    if missing:
        logger.warning("%s: %d of %d questions have no prediction; counted wrong", source, missing, len(hits))
    return ExactMatchScores(
        accuracy=100.0 * sum(hits) / len(hits),
        categories={name: 100.0 * sum(v) / len(v) for name, v in sorted(per_category.items())},
        count=len(hits),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question-file", required=True, help="jsonl with question_id and answer")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--benchmark", default="exact_match", help="name stored in --results-json")
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> ExactMatchScores:
    args = build_parser().parse_args(argv)
    predictions = {
        str(field(r, "question_id", args.result_file)): str(field(r, "text", args.result_file))
        for r in read_jsonl(args.result_file)
    }
    scores = score_exact_match(read_jsonl(args.question_file), predictions, args.question_file)
    for name, value in scores.categories.items():
        print(f"{name}: {value:.2f}%")
    print(f"Samples: {scores.count}, Accuracy: {scores.accuracy:.2f}%")
    write_results_json(args.results_json, args.benchmark, scores.accuracy, categories=scores.categories)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
