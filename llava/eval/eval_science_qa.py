"""ScienceQA-IMG scorer (LLaVA-1.5 protocol).

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (ScienceQA) and
https://github.com/lupantech/ScienceQA (problems.json, pid_splits.json). A prediction is parsed
in this order: the exact letter; text starting with "X. "; a single match of
"The answer is ([A-Z])."; anything else is FAILED. A letter beyond the problem's choices is wrong.
Every problem of the split needs exactly one answer (LLaVA counted a missing one as FAILED; here
it is an error, or with `--allow-missing` left out of the scores and counted).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava.eval.run_record import SCIENCE_RUNNER, check_question_file
from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    index_answers,
    read_json,
    read_jsonl,
    report_scores,
    write_json,
)
from llava.eval.scoring_io import field as require_field

logger = logging.getLogger(__name__)

OPTIONS: tuple[str, ...] = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
# As in LLaVA: the final "." is a regex wildcard, so "The answer is B," also matches.
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_letter(text: str, options: Sequence[str] = OPTIONS) -> str:
    """Letter the model chose, or FAILED. Only the parsing order of the protocol; no guessing."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    matches = _ANSWER_IS.findall(text)
    return matches[0] if len(matches) == 1 else FAILED


def option_index(letter: str, num_choices: int, options: Sequence[str] = OPTIONS) -> int:
    """Index of `letter` among the problem's own choices; -1 when FAILED or out of range."""
    if letter in options[:num_choices]:
        return options.index(letter)
    return -1


@dataclass
class ScienceQAResult:
    correct: list[dict[str, Any]] = field(default_factory=list)
    incorrect: list[dict[str, Any]] = field(default_factory=list)
    pred_indices: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.correct) + len(self.incorrect)

    @property
    def accuracy(self) -> float:
        return 100.0 * len(self.correct) / self.total if self.total else 0.0

    @property
    def img_accuracy(self) -> float:
        img_correct = sum(item["is_multimodal"] for item in self.correct)
        img_total = img_correct + sum(item["is_multimodal"] for item in self.incorrect)
        return 100.0 * img_correct / img_total if img_total else 0.0


def score_science_qa(
    problems: Mapping[str, Mapping[str, Any]],
    split_ids: Sequence[str],
    predictions: Mapping[str, Mapping[str, Any]],
    options: Sequence[str] = OPTIONS,
) -> ScienceQAResult:
    """Score the problems of the split that have a prediction (every one of them once
    `load_predictions` has checked the coverage without `--allow-missing`)."""
    result = ScienceQAResult()
    for pid in split_ids:
        if pid not in problems:
            raise ValueError(f"problems.json: split lists problem {pid!r} that it does not contain")
        if pid not in predictions:
            continue
        problem = problems[pid]
        text, prompt = predictions[pid]["text"], predictions[pid]["prompt"]
        letter = parse_letter(text, options)
        index = option_index(letter, len(problem["choices"]), options)
        item = {
            "question_id": pid,
            "parsed_ans": letter,
            "ground_truth": options[problem["answer"]],
            "question": prompt,
            "pred": text,
            "is_multimodal": "<image>" in prompt,
        }
        result.pred_indices[pid] = index
        result.outputs[pid] = text
        (result.correct if index == problem["answer"] else result.incorrect).append(item)
    return result


def _prediction_key(record: Mapping[str, Any], where: str) -> str:
    for name in ("question_id", "text", "prompt"):
        require_field(record, name, where)
    return str(record["question_id"])


def load_predictions(
    result_file: str | Path, split_ids: Sequence[str], allow_missing: bool = False
) -> tuple[dict[str, Mapping[str, Any]], Coverage]:
    """`{problem id: answer record}`, every problem of the split answered exactly once."""
    return index_answers(
        read_jsonl(result_file), _prediction_key, split_ids, str(result_file), allow_missing=allow_missing
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    parser.add_argument("--output-file", default=None, help='writes {"correct": [...], "incorrect": [...]}')
    parser.add_argument("--output-result", default=None, help="writes acc, counts, parsed indices, outputs")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--question-file",
        default=None,
        help="llava_test_CQM-A.json: refuse answers made from another question file (their run record)",
    )
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> ScienceQAResult:
    args = build_parser().parse_args(argv)
    base = Path(args.base_dir)
    splits = read_json(base / "pid_splits.json")
    if args.split not in splits:
        raise ValueError(f"{base / 'pid_splits.json'}: no split {args.split!r} (has {sorted(splits)})")
    check_question_file(args.result_file, args.question_file, runners=(SCIENCE_RUNNER,))
    predictions, coverage = load_predictions(args.result_file, splits[args.split], args.allow_missing)
    result = score_science_qa(read_json(base / "problems.json"), splits[args.split], predictions)
    print(
        f"Total: {result.total}, Correct: {len(result.correct)}, Accuracy: {result.accuracy:.2f}%, "
        f"IMG-Accuracy: {result.img_accuracy:.2f}%"
    )
    if args.output_file:
        write_json(args.output_file, {"correct": result.correct, "incorrect": result.incorrect}, indent=2)
    if args.output_result:
        summary = {
            "acc": result.accuracy,
            "correct": len(result.correct),
            "count": result.total,
            "results": result.pred_indices,
            "outputs": result.outputs,
        }
        write_json(args.output_result, summary, indent=2)
    details = {"accuracy": result.accuracy, "total": result.total}
    report_scores(args.results_json, "sqa", result.img_accuracy, coverage, **details)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
