"""TextVQA (val) scorer: VQA accuracy with the EvalAI answer processor.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (TextVQA). Answers
are matched to `TextVQA_0.5.1_val.json` by (image_id, lower-cased question), the question being
the first line of the prompt (the runner's `question_id` is the image id).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_processor import vqa_accuracy
from llava.eval.scoring_io import field, read_json, read_jsonl, write_results_json

logger = logging.getLogger(__name__)

NUM_GT_ANSWERS = 10
Key = tuple[str, str]


def question_key(image_id: Any, question: str) -> Key:
    return str(image_id), question.strip().lower()


def prompt_question(prompt: str) -> str:
    """The question inside a runner prompt: its first line."""
    return prompt.split("\n", 1)[0]


def index_annotations(annotations: Sequence[Mapping[str, Any]], source: str) -> dict[Key, list[str]]:
    index: dict[Key, list[str]] = {}
    for i, ann in enumerate(annotations):
        where = f"{source}: data[{i}]"
        answers = field(ann, "answers", where)
        if len(answers) != NUM_GT_ANSWERS:
            raise ValueError(f"{where}: expected {NUM_GT_ANSWERS} answers, got {len(answers)}")
        index[question_key(field(ann, "image_id", where), field(ann, "question", where))] = answers
    return index


def score_textvqa(results: Sequence[Mapping[str, Any]], gt: Mapping[Key, list[str]], source: str) -> float:
    """Mean VQA accuracy x 100 over the results; each must find its annotation."""
    if not results:
        raise ValueError(f"{source}: no answers to score")
    total = 0.0
    for i, result in enumerate(results, start=1):
        where = f"{source}: record {i}"
        key = question_key(
            field(result, "question_id", where), prompt_question(field(result, "prompt", where))
        )
        if key not in gt:
            raise ValueError(f"{where}: no annotation for image {key[0]!r} and question {key[1]!r}")
        total += vqa_accuracy(field(result, "text", where), gt[key])
    return 100.0 * total / len(results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> float:
    args = build_parser().parse_args(argv)
    annotations = field(read_json(args.annotation_file), "data", args.annotation_file)
    results = read_jsonl(args.result_file)
    accuracy = score_textvqa(results, index_annotations(annotations, args.annotation_file), args.result_file)
    print(Path(args.result_file).stem)
    print(f"Samples: {len(results)}\nAccuracy: {accuracy:.2f}%")
    write_results_json(args.results_json, "textvqa", accuracy, samples=len(results))
    return accuracy


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
