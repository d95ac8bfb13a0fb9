"""SEED-Bench scorer: accuracy per question type, on image questions, on video questions, in total.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (SEED-Bench) and
https://github.com/AILab-CVC/SEED-Bench: an answer is right iff the predicted text equals the
answer letter. LLaVA-1.5's "SEED" column is the image-question accuracy (the headline here).
Missing predictions count as wrong.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.scoring_io import field, read_json, read_jsonl, write_results_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedScores:
    question_types: dict[str, float]
    by_data_type: dict[str, float]
    total: float

    @property
    def image(self) -> float | None:
        return self.by_data_type.get("image")


def _accuracy(hits: list[bool]) -> float:
    return 100.0 * sum(hits) / len(hits)


def index_predictions(results: Sequence[Mapping[str, Any]], source: str) -> dict[str, str]:
    return {
        str(field(r, "question_id", f"{source}: record {i}")): str(field(r, "text", f"{source}: record {i}"))
        for i, r in enumerate(results, start=1)
    }


def score_seed(annotation: Mapping[str, Any], predictions: Mapping[str, str], source: str) -> SeedScores:
    type_names = {int(v): k for k, v in field(annotation, "question_type", source).items()}
    by_type: dict[int, list[bool]] = {}
    by_data: dict[str, list[bool]] = {}
    hits: list[bool] = []
    missing = 0
    for i, question in enumerate(field(annotation, "questions", source)):
        where = f"{source}: questions[{i}]"
        qid = str(field(question, "question_id", where))
        missing += qid not in predictions
        correct = predictions.get(qid) == field(question, "answer", where)
        by_type.setdefault(int(field(question, "question_type_id", where)), []).append(correct)
        by_data.setdefault(str(question.get("data_type", "image")), []).append(correct)
        hits.append(correct)
    if not hits:
        raise ValueError(f"{source}: no questions")
    if missing:
        logger.warning("SEED-Bench: %d of %d questions have no prediction; counted wrong", missing, len(hits))
    return SeedScores(
        question_types={type_names.get(t, str(t)): _accuracy(v) for t, v in sorted(by_type.items())},
        by_data_type={name: _accuracy(v) for name, v in sorted(by_data.items())},
        total=_accuracy(hits),
    )


def print_scores(scores: SeedScores) -> None:
    for name, value in scores.question_types.items():
        print(f"{name}: {value:.2f}%")
    print(f"Total accuracy: {scores.total:.2f}%")
    for name, value in scores.by_data_type.items():
        print(f"{name} accuracy: {value:.2f}%")


def write_seed_results(path: str | None, scores: SeedScores) -> None:
    write_results_json(
        path,
        "seed",
        scores.image,
        total=scores.total,
        by_data_type=scores.by_data_type,
        question_types=scores.question_types,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> SeedScores:
    args = build_parser().parse_args(argv)
    predictions = index_predictions(read_jsonl(args.result_file), args.result_file)
    scores = score_seed(read_json(args.annotation_file), predictions, args.annotation_file)
    print_scores(scores)
    write_seed_results(args.results_json, scores)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
