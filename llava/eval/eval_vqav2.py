"""VQAv2 val scorer: the official VQA accuracy, overall and per answer type (yes/no, number,
other) and per question type.

Protocol: the official evaluation, https://github.com/GT-Vision-Lab/VQA
(PythonEvaluationTools/vqaEvaluation/vqaEval.py) and https://visualqa.org/evaluation.html. The
prediction has newlines and tabs made spaces and is stripped, then goes through the punctuation
step (with the official single digit,digit comma test) and the digit/article step of
`llava.eval.answer_processor`; the ten human answers are used as annotated, and only when they
disagree do they go through the punctuation step (not the digit/article one). A question scores
the mean, over the ten answers left out in turn, of min(1, matches among the other nine / 3);
the accuracies are means of those x 100 (the official tool prints them rounded to 2 decimals).
Per answer and question type, a question counts with that mean too; the official tool's per-type
tables append the last leave-one-out value instead (its overall figure uses the mean, as here).
LLaVA's EvalAI processor (`normalize_answer`, used for the test-dev upload) is not applied.

Answers (`llava.eval.model_vqa_loader` on the `llava.eval.question_files vqav2_val` question file)
are matched to `v2_mscoco_val2014_annotations.json` by question id. The expected questions are
those of the question file (`--question-file`, which may hold a subset of val), each needing
exactly one answer; without it, every annotated question.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.answer_processor import VQA_EVAL_DIGIT_COMMA, process_digits_articles, process_punctuation
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

NUM_GT_ANSWERS = 10
ANSWER_TYPES: tuple[str, ...] = ("yes/no", "number", "other")


def official_punctuation(text: str) -> str:
    return process_punctuation(text, digit_comma=VQA_EVAL_DIGIT_COMMA)


def vqa_eval_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """One question's accuracy in [0, 1] by the official `vqaEval.py` (see the module docstring)."""
    if not gt_answers:
        raise ValueError("vqa_eval_accuracy needs at least one ground-truth answer")
    predicted = prediction.replace("\n", " ").replace("\t", " ").strip()
    predicted = process_digits_articles(official_punctuation(predicted))
    gts = list(gt_answers)
    if len(set(gts)) > 1:
        gts = [official_punctuation(answer) for answer in gts]
    matches = sum(gt == predicted for gt in gts)
    return sum(min(1.0, (matches - (gt == predicted)) / 3.0) for gt in gts) / len(gts)


@dataclass(frozen=True)
class Annotation:
    answers: list[str]
    answer_type: str
    question_type: str


def read_annotations(data: Any, source: str) -> dict[str, Annotation]:
    """`{question id (str): Annotation}` of an official annotations file; each question needs its
    ten answers."""
    annotations: dict[str, Annotation] = {}
    for i, ann in enumerate(field(data, "annotations", source)):
        where = f"{source}: annotations[{i}]"
        answers = [field(a, "answer", f"{where}.answers") for a in field(ann, "answers", where)]
        if len(answers) != NUM_GT_ANSWERS:
            raise ValueError(f"{where}: expected {NUM_GT_ANSWERS} answers, got {len(answers)}")
        qid = str(field(ann, "question_id", where))
        if qid in annotations:
            raise ValueError(f"{where}: question_id {qid} is annotated twice")
        annotations[qid] = Annotation(
            answers, str(field(ann, "answer_type", where)), str(field(ann, "question_type", where))
        )
    if not annotations:
        raise ValueError(f"{source}: no annotations")
    return annotations


@dataclass(frozen=True)
class VQAv2Scores:
    overall: float
    answer_types: dict[str, float]
    question_types: dict[str, float]
    count: int


def _mean100(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def score_vqav2(annotations: Mapping[str, Annotation], predictions: Mapping[str, str]) -> VQAv2Scores:
    """Accuracies x 100 over the predicted questions (every expected one once the coverage has
    been checked without `--allow-missing`)."""
    if not predictions:
        raise ValueError("VQAv2: no answered questions")
    overall: list[float] = []
    by_answer: dict[str, list[float]] = {}
    by_question: dict[str, list[float]] = {}
    for qid, prediction in predictions.items():
        ann = annotations[qid]
        accuracy = vqa_eval_accuracy(prediction, ann.answers)
        overall.append(accuracy)
        by_answer.setdefault(ann.answer_type, []).append(accuracy)
        by_question.setdefault(ann.question_type, []).append(accuracy)
    order = [*ANSWER_TYPES, *sorted(set(by_answer) - set(ANSWER_TYPES))]
    return VQAv2Scores(
        overall=_mean100(overall),
        answer_types={name: _mean100(by_answer[name]) for name in order if name in by_answer},
        question_types={name: _mean100(values) for name, values in sorted(by_question.items())},
        count=len(overall),
    )


def expected_questions(annotations: Mapping[str, Annotation], question_file: str | None) -> list[str]:
    """The question ids to answer: the question file's (each must be annotated), else all."""
    if question_file is None:
        return list(annotations)
    asked = [
        str(field(q, "question_id", f"{question_file}: record {i}"))
        for i, q in enumerate(read_jsonl(question_file), start=1)
    ]
    unannotated = [qid for qid in asked if qid not in annotations]
    if unannotated:
        raise ValueError(
            f"{question_file}: {len(unannotated)} question(s) have no annotation (e.g. {unannotated[:5]}): "
            "questions of another split than the annotation file's"
        )
    return asked


def index_predictions(
    results: Sequence[Mapping[str, Any]], expected: Sequence[str], source: str, allow_missing: bool = False
) -> tuple[dict[str, str], Coverage]:
    """`{question id (str): text}`, every expected question answered exactly once."""
    by_id, coverage = index_answers(
        results, lambda r, where: str(field(r, "question_id", where)), expected, source, allow_missing
    )
    return {qid: str(field(r, "text", f"{source}: question {qid}")) for qid, r in by_id.items()}, coverage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="v2_mscoco_val2014_annotations.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner (merged chunks)")
    parser.add_argument(
        "--question-file",
        default=None,
        help="the question file that was answered: its questions are the expected ones, and answers "
        "made from another question file are refused",
    )
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> VQAv2Scores:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    annotations = read_annotations(read_json(args.annotation_file), args.annotation_file)
    expected = expected_questions(annotations, args.question_file)
    predictions, coverage = index_predictions(
        read_jsonl(args.result_file), expected, args.result_file, args.allow_missing
    )
    scores = score_vqav2(annotations, predictions)
    print(f"Samples: {scores.count}\nOverall Accuracy: {scores.overall:.2f}%")
    for name, value in scores.answer_types.items():
        print(f"{name}: {value:.2f}%")
    details = {"answer_types": scores.answer_types, "question_types": scores.question_types}
    report_scores(args.results_json, "vqav2_val", scores.overall, coverage, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
