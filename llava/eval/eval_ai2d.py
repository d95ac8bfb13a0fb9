"""AI2D scorer: accuracy of the option letter, by lmms-eval's `ai2d` rule.

Protocol: lmms-eval's `ai2d` task (lmms_eval/tasks/ai2d: ai2d.yaml, utils.py, lmms-eval 0.7.3).
Its "flexible-extract" filter takes the letter of an answer that starts with a letter and a
period ("B. the sun" -> "B"), else keeps the whole answer; `exact_match` with `ignore_case` and
`ignore_punctuation` then compares it with the answer letter after lower-casing both and deleting
ASCII punctuation (Python's `string.punctuation`). So "B", "b", "(B)" and "B. the sun" are right
and "B) the sun" or "The answer is B" are not.

The question file (`llava.eval.question_files ai2d`) holds each question's `answer` letter; every
question needs exactly one answer, and answers made from another question file are refused.
"""

from __future__ import annotations

import argparse
import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.eval_exact_match import index_predictions
from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import add_results_arguments, field, read_jsonl, report_scores

logger = logging.getLogger(__name__)

_LEADING_LETTER = re.compile(r"^\s*([A-Z])\.")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def extract_choice(text: str) -> str:
    """The filter: the letter of a leading "X." when there is one, else the text unchanged."""
    match = _LEADING_LETTER.match(text)
    return match.group(1) if match else text


def _compared(text: str) -> str:
    return text.lower().translate(_NO_PUNCTUATION)


def is_correct(prediction: str, answer: str) -> bool:
    return _compared(extract_choice(prediction)) == _compared(answer)


@dataclass(frozen=True)
class AI2DScores:
    accuracy: float
    correct: int
    count: int


def score_ai2d(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[str, str], source: str = "questions"
) -> AI2DScores:
    """Accuracy x 100 over the questions that have a prediction (all of them once the coverage
    has been checked without `--allow-missing`)."""
    hits = []
    for i, question in enumerate(questions, start=1):
        qid = str(field(question, "question_id", f"{source}: record {i}"))
        if qid in predictions:
            hits.append(is_correct(predictions[qid], str(field(question, "answer", f"{source}: record {i}"))))
    if not hits:
        raise ValueError(f"{source}: no answered questions")
    return AI2DScores(100.0 * sum(hits) / len(hits), sum(hits), len(hits))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--question-file", required=True, help="the AI2D question file (llava.eval.question_files ai2d)"
    )
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> AI2DScores:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    questions = read_jsonl(args.question_file)
    predictions, coverage = index_predictions(
        read_jsonl(args.result_file), questions, args.result_file, args.question_file, args.allow_missing
    )
    scores = score_ai2d(questions, predictions, args.question_file)
    print(f"Samples: {scores.count}, Correct: {scores.correct}, Accuracy: {scores.accuracy:.2f}%")
    report_scores(args.results_json, "ai2d", scores.accuracy, coverage, correct=scores.correct)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
