"""TextVQA (val) scorer: VQA accuracy with the EvalAI answer processor.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (TextVQA). Answers
are matched to `TextVQA_0.5.1_val.json` by (image_id, lower-cased question), the question being
the first line of the prompt (the runner's `question_id` is the image id); every annotated
question needs exactly one answer, and an answer without an annotation is refused.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_processor import vqa_accuracy
from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    check_coverage,
    field,
    read_json,
    read_jsonl,
    report_scores,
)

logger = logging.getLogger(__name__)

NUM_GT_ANSWERS = 10
Key = tuple[str, str]


def question_key(image_id: Any, question: str) -> Key:
    return str(image_id), question.strip().lower()


def prompt_question(prompt: str) -> str:
    """The question inside a runner prompt: its first line."""
    return prompt.split("\n", 1)[0]


def index_annotations(
    annotations: Sequence[Mapping[str, Any]], source: str
) -> tuple[dict[Key, list[str]], list[Key]]:
    """`{key: answers}` and every annotation's key in file order (a key asked twice about one
    image is listed twice: it needs two answers)."""
    index: dict[Key, list[str]] = {}
    keys: list[Key] = []
    for i, ann in enumerate(annotations):
        where = f"{source}: data[{i}]"
        answers = field(ann, "answers", where)
        if len(answers) != NUM_GT_ANSWERS:
            raise ValueError(f"{where}: expected {NUM_GT_ANSWERS} answers, got {len(answers)}")
        key = question_key(field(ann, "image_id", where), field(ann, "question", where))
        index[key] = answers
        keys.append(key)
    return index, keys


def result_key(result: Mapping[str, Any], where: str) -> Key:
    return question_key(field(result, "question_id", where), prompt_question(field(result, "prompt", where)))


def score_textvqa(
    results: Sequence[Mapping[str, Any]],
    gt: Mapping[Key, list[str]],
    expected: Sequence[Key],
    source: str,
    allow_missing: bool = False,
) -> tuple[float, Coverage]:
    """Mean VQA accuracy x 100 over the results, after checking that every annotated question
    is answered exactly once."""
    if not results:
        raise ValueError(f"{source}: no answers to score")
    keys = [result_key(result, f"{source}: record {i}") for i, result in enumerate(results, start=1)]
    coverage = check_coverage(expected, keys, source, allow_missing=allow_missing)
    total = sum(
        vqa_accuracy(field(result, "text", f"{source}: record {i}"), gt[key])
        for i, (key, result) in enumerate(zip(keys, results, strict=True), start=1)
    )
    return 100.0 * total / len(results), coverage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava_textvqa_val_v051_ocr.jsonl: refuse answers made from another question file",
    )
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> float:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    annotations = field(read_json(args.annotation_file), "data", args.annotation_file)
    results = read_jsonl(args.result_file)
    gt, expected = index_annotations(annotations, args.annotation_file)
    accuracy, coverage = score_textvqa(results, gt, expected, args.result_file, args.allow_missing)
    print(Path(args.result_file).stem)
    print(f"Samples: {len(results)}\nAccuracy: {accuracy:.2f}%")
    report_scores(args.results_json, "textvqa", accuracy, coverage, samples=len(results))
    return accuracy


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
