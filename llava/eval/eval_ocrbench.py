"""OCRBench scorer: one point per question whose answer contains a ground-truth answer, summed per
category and group into the final score out of 1000.

Protocol: https://github.com/Yuliang-Liu/MultimodalOCR (OCRBench/example.py, the official
scoring). A prediction is right when one of the record's `answers` (a text or a list) is a
substring of it, both lower-cased, stripped and with newlines made spaces; for the HME100k records
(handwritten formulas) the comparison keeps the case and removes every space instead. The ten
`type`s make five groups: Text Recognition (six types, 50 questions each), Scene Text-centric
VQA, Doc-oriented VQA, Key Information Extraction (200 each) and Handwritten Mathematical
Expression Recognition (100). lmms-eval's `ocrbench` task also folds fullwidth characters to
ASCII before comparing; the official scoring, kept here, does not.

Answers (`llava.eval.model_vqa_loader` on the `llava.eval.question_files ocrbench` question
file) are matched to OCRBench.json by position (`question_id`); every record needs exactly one
answer, and an answer whose prompt is not its record's question comes from another OCRBench.json.
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
    add_results_arguments,
    field,
    index_answers,
    read_json,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)

RECOGNITION_TYPES: tuple[str, ...] = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)
# The five groups of the final score, in the official printout's order, and their types.
GROUPS: dict[str, tuple[str, ...]] = {
    "Text Recognition": RECOGNITION_TYPES,
    "Scene Text-centric VQA": ("Scene Text-centric VQA",),
    "Doc-oriented VQA": ("Doc-oriented VQA",),
    "Key Information Extraction": ("Key Information Extraction",),
    "Handwritten Mathematical Expression Recognition": ("Handwritten Mathematical Expression Recognition",),
}
TYPES: tuple[str, ...] = tuple(t for types in GROUPS.values() for t in types)
HME_DATASET = "HME100k"


def _plain(text: str) -> str:
    return text.lower().strip().replace("\n", " ")


def _formula(text: str) -> str:
    return text.strip().replace("\n", " ").replace(" ", "")


def is_match(prediction: str, answers: str | Sequence[str], dataset_name: str) -> bool:
    """Whether one ground-truth answer is inside the prediction, by the official rule."""
    normalise = _formula if dataset_name == HME_DATASET else _plain
    candidates = [answers] if isinstance(answers, str) else answers
    predicted = normalise(prediction)
    return any(normalise(answer) in predicted for answer in candidates)


@dataclass(frozen=True)
class OCRBenchRecord:
    question: str
    answers: str | list[str]
    dataset_name: str
    type: str


def read_records(entries: Any, source: str) -> list[OCRBenchRecord]:
    """The records of OCRBench.json, checked: answers a text or a list of texts, a known type."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: expected a non-empty JSON list of OCRBench records")
    records = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        answers = field(entry, "answers", where)
        if not (
            isinstance(answers, str)
            or (isinstance(answers, list) and all(isinstance(a, str) for a in answers))
        ):
            raise ValueError(f"{where}: answers should be a text or a list of texts, got {answers!r}")
        kind = field(entry, "type", where)
        if kind not in TYPES:
            raise ValueError(f"{where}: unknown type {kind!r}; OCRBench's types are {list(TYPES)}")
        records.append(
            OCRBenchRecord(
                field(entry, "question", where), answers, field(entry, "dataset_name", where), kind
            )
        )
    return records


@dataclass(frozen=True)
class OCRBenchScores:
    """Points (right answers) per type and group, the final score, and accuracy x 100 per source
    dataset; `questions` counts the scored questions per type (50, 200, ... on the full file)."""

    final: int
    types: dict[str, int]
    groups: dict[str, int]
    questions: dict[str, int]
    datasets: dict[str, float]
    count: int


def index_predictions(
    results: Sequence[Mapping[str, Any]],
    records: Sequence[OCRBenchRecord],
    source: str,
    annotation_source: str = "OCRBench.json",
    allow_missing: bool = False,
) -> tuple[dict[int, str], Coverage]:
    """`{position: text}`: every record answered exactly once; an answer whose prompt differs
    from its record's question is refused."""
    by_id, coverage = index_answers(
        results, lambda r, where: field(r, "question_id", where), range(len(records)), source, allow_missing
    )
    texts = {}
    for qid, result in by_id.items():
        prompt = result.get("prompt")
        if prompt is not None and prompt != records[qid].question:
            raise ValueError(
                f"{source}: question {qid} was asked {prompt!r}, but {annotation_source}[{qid}] asks "
                f"{records[qid].question!r}: answers to another OCRBench.json (or question file)"
            )
        texts[qid] = str(field(result, "text", f"{source}: question {qid}"))
    return texts, coverage


def score_ocrbench(records: Sequence[OCRBenchRecord], predictions: Mapping[int, str]) -> OCRBenchScores:
    """Points over the records that have a prediction (all of them once `index_predictions` has
    checked the coverage without `--allow-missing`)."""
    points = dict.fromkeys(TYPES, 0)
    questions = dict.fromkeys(TYPES, 0)
    per_dataset: dict[str, list[bool]] = {}
    for i, record in enumerate(records):
        if i not in predictions:
            continue
        right = is_match(predictions[i], record.answers, record.dataset_name)
        points[record.type] += right
        questions[record.type] += 1
        per_dataset.setdefault(record.dataset_name, []).append(right)
    if not per_dataset:
        raise ValueError("OCRBench: no answered questions")
    groups = {name: sum(points[t] for t in types) for name, types in GROUPS.items()}
    return OCRBenchScores(
        final=sum(groups.values()),
        types=points,
        groups=groups,
        questions=questions,
        datasets={name: 100.0 * sum(hits) / len(hits) for name, hits in per_dataset.items()},
        count=sum(questions.values()),
    )


def print_scores(scores: OCRBenchScores) -> None:
    """The official printout's layout: groups, the recognition types, the final score."""
    for group, types in GROUPS.items():
        total = sum(scores.questions[t] for t in types)
        print(f"{group} (of {total}): {scores.groups[group]}")
        if len(types) > 1:
            for kind in types:
                print(f"  {kind} (of {scores.questions[kind]}): {scores.types[kind]}")
    print(f"Final Score (of {scores.count}): {scores.final}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="OCRBench.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument(
        "--question-file",
        default=None,
        help="the question file that was answered: refuse answers made from another one",
    )
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> OCRBenchScores:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    records = read_records(read_json(args.annotation_file), args.annotation_file)
    predictions, coverage = index_predictions(
        read_jsonl(args.result_file), records, args.result_file, args.annotation_file, args.allow_missing
    )
    scores = score_ocrbench(records, predictions)
    print_scores(scores)
    details = {"groups": scores.groups, "types": scores.types, "datasets": scores.datasets}
    report_scores(args.results_json, "ocrbench", scores.final, coverage, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
