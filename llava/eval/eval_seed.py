"""SEED-Bench scorer: accuracy per question type, on image questions, on video questions, in total.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (SEED-Bench) and
https://github.com/AILab-CVC/SEED-Bench: an answer is right iff the predicted text equals the
answer letter. LLaVA-1.5's "SEED" column is the image-question accuracy (the headline here).
Every annotated question needs exactly one answer (`--allow-missing` scores the answered ones).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_coverage_argument,
    field,
    index_answers,
    print_coverage,
    read_json,
    read_jsonl,
    write_results_json,
)

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


def seed_question_ids(annotation: Mapping[str, Any], source: str) -> list[str]:
    return [
        str(field(q, "question_id", f"{source}: questions[{i}]"))
        for i, q in enumerate(field(annotation, "questions", source))
    ]


def index_seed_answers(
    results: Sequence[Mapping[str, Any]],
    annotation: Mapping[str, Any],
    source: str,
    annotation_source: str = "SEED-Bench.json",
    allow_missing: bool = False,
) -> tuple[dict[str, str], Coverage]:
    """`{question_id (str): text}`, every annotated question answered exactly once (int and str
    ids are the same question)."""
    by_id, coverage = index_answers(
        results,
        lambda r, where: str(field(r, "question_id", where)),
        seed_question_ids(annotation, annotation_source),
        source,
        allow_missing=allow_missing,
    )
    texts = {qid: str(field(r, "text", f"{source}: question {qid!r}")) for qid, r in by_id.items()}
    return texts, coverage


def score_seed(annotation: Mapping[str, Any], predictions: Mapping[str, str], source: str) -> SeedScores:
    """Accuracies over the annotated questions that have a prediction (all of them once
    `index_seed_answers` has checked the coverage without `--allow-missing`)."""
    type_names = {int(v): k for k, v in field(annotation, "question_type", source).items()}
    by_type: dict[int, list[bool]] = {}
    by_data: dict[str, list[bool]] = {}
    hits: list[bool] = []
    for i, question in enumerate(field(annotation, "questions", source)):
        where = f"{source}: questions[{i}]"
        qid = str(field(question, "question_id", where))
        if qid not in predictions:
            continue
        correct = predictions[qid] == field(question, "answer", where)
        by_type.setdefault(int(field(question, "question_type_id", where)), []).append(correct)
        by_data.setdefault(str(question.get("data_type", "image")), []).append(correct)
        hits.append(correct)
    if not hits:
        raise ValueError(f"{source}: no answered questions")
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


def write_seed_results(path: str | None, scores: SeedScores, coverage: Coverage) -> None:
    write_results_json(
        path,
        "seed",
        scores.image,
        total=scores.total,
        by_data_type=scores.by_data_type,
        question_types=scores.question_types,
        coverage=coverage.as_dict(),
    )


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava-seed-bench.jsonl: refuse answers made from another question file (their run record)",
    )
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    add_coverage_argument(parser)


def score_seed_file(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str], SeedScores]:
    """Read, check (run record, coverage), score, print and store: the common part of the
    scorer and the upload converter. Returns the annotation, the predictions and the scores."""
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    annotation = read_json(args.annotation_file)
    predictions, coverage = index_seed_answers(
        read_jsonl(args.result_file), annotation, args.result_file, args.annotation_file, args.allow_missing
    )
    scores = score_seed(annotation, predictions, args.annotation_file)
    print_scores(scores)
    print_coverage(coverage)
    write_seed_results(args.results_json, scores, coverage)
    return annotation, predictions, scores


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> SeedScores:
    _, _, scores = score_seed_file(build_parser().parse_args(argv))
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
