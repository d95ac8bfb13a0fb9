"""SEED-Bench scorer: accuracy per question type, on image questions, on video questions, in total.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (SEED-Bench) and
https://github.com/AILab-CVC/SEED-Bench: an answer is right iff the predicted text equals the
answer letter. LLaVA-1.5's "SEED" column is the image-question accuracy (the headline here).

The expected questions are those of the question file that was answered (`--question-file`,
LLaVA's `llava-seed-bench.jsonl`), each needing exactly one answer (`--allow-missing` scores the
answered ones); without it, those of `SEED-Bench.json`. The two need not agree: LLaVA's question
file was made from another `SEED-Bench.json` version than the one the benchmark now serves
(https://github.com/haotian-liu/LLaVA/issues/1207). Annotated questions the question file lacks,
and asked questions without an annotation, are counted and printed, not scored, not an error.
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


@dataclass(frozen=True)
class QuestionSets:
    """How the asked questions (the question file's) and the annotated ones differ, by id."""

    not_asked: tuple[str, ...] = ()  # annotated, but not in the question file
    not_annotated: tuple[str, ...] = ()  # in the question file, but not annotated

    def describe(self, question_source: str, annotation_source: str) -> list[str]:
        lines = []
        if self.not_asked:
            lines.append(
                f"{len(self.not_asked)} question(s) of {annotation_source} are not in {question_source} (not scored)"
            )
        if self.not_annotated:
            lines.append(
                f"{len(self.not_annotated)} question(s) of {question_source} have no annotation in {annotation_source} (not scored)"
            )
        return lines


def compare_question_sets(asked: Sequence[str], annotated: Sequence[str]) -> QuestionSets:
    asked_set, annotated_set = set(asked), set(annotated)
    return QuestionSets(
        not_asked=tuple(qid for qid in annotated if qid not in asked_set),
        not_annotated=tuple(qid for qid in asked if qid not in annotated_set),
    )


def index_seed_answers(
    results: Sequence[Mapping[str, Any]],
    annotation: Mapping[str, Any],
    source: str,
    annotation_source: str = "SEED-Bench.json",
    allow_missing: bool = False,
    asked: Sequence[str] | None = None,
) -> tuple[dict[str, str], Coverage]:
    """`{question_id (str): text}`, every question of `asked` (the question file's ids; the
    annotated ones when None) answered exactly once (int and str ids are the same question)."""
    by_id, coverage = index_answers(
        results,
        lambda r, where: str(field(r, "question_id", where)),
        seed_question_ids(annotation, annotation_source) if asked is None else asked,
        source,
        allow_missing=allow_missing,
    )
    texts = {qid: str(field(r, "text", f"{source}: question {qid!r}")) for qid, r in by_id.items()}
    return texts, coverage


def read_asked_ids(question_file: str) -> list[str]:
    """The ids (as str) of a SEED question file (LLaVA's `llava-seed-bench.jsonl`)."""
    return [
        str(field(q, "question_id", f"{question_file}: record {i}"))
        for i, q in enumerate(read_jsonl(question_file), start=1)
    ]


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


def write_seed_results(path: str | None, scores: SeedScores, coverage: Coverage, sets: QuestionSets) -> None:
    write_results_json(
        path,
        "seed",
        scores.image,
        coverage.partial,
        total=scores.total,
        by_data_type=scores.by_data_type,
        question_types=scores.question_types,
        coverage=coverage.as_dict(),
        annotated_not_asked=len(sets.not_asked),
        asked_not_annotated=len(sets.not_annotated),
    )


def add_seed_arguments(parser: argparse.ArgumentParser, allow_missing: bool = True) -> None:
    """The scorer's flags; the upload converter has no `--allow-missing` (the upload needs every
    question)."""
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava-seed-bench.jsonl: the questions that were answered (each needs one answer); "
        "answers made from another question file (their run record) are refused",
    )
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    if allow_missing:
        add_coverage_argument(parser)


def score_seed_file(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str], SeedScores]:
    """Read, check (run record, coverage), score, print and store: the common part of the
    scorer and the upload converter. Returns the annotation, the predictions and the scores."""
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    annotation = read_json(args.annotation_file)
    asked = read_asked_ids(args.question_file) if args.question_file else None
    predictions, coverage = index_seed_answers(
        read_jsonl(args.result_file),
        annotation,
        args.result_file,
        args.annotation_file,
        getattr(args, "allow_missing", False),
        asked,
    )
    sets = QuestionSets()
    if asked is not None:
        sets = compare_question_sets(asked, seed_question_ids(annotation, args.annotation_file))
    scores = score_seed(annotation, predictions, args.annotation_file)
    print_scores(scores)
    for line in sets.describe(args.question_file, args.annotation_file):
        print(f"NOTE: {line}")
    print_coverage(coverage)
    write_seed_results(args.results_json, scores, coverage, sets)
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
