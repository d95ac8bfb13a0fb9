"""GQA scorer: exact-match accuracy on the balanced test-dev questions.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (GQA) and the
official GQA `eval.py` (https://cs.stanford.edu/people/dorarad/gqa/evaluate.html): predictions
`[{"questionId", "prediction"}]` (written by `scripts/convert_gqa_for_eval.py`) against
`{qid: {"answer", "isBalanced", "types": {"structural"}}}`; only balanced questions count, every
one needs exactly one prediction, and a prediction for a question outside the file is refused;
"open" = structural type "query", the rest "binary".
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.scoring_io import (
    Coverage,
    add_results_arguments,
    check_coverage,
    field,
    read_json,
    report_scores,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GQAScores:
    accuracy: float
    binary: float | None
    open: float | None
    count: int


def _percent(hits: list[bool]) -> float | None:
    return 100.0 * sum(hits) / len(hits) if hits else None


def index_predictions(
    predictions: Sequence[Mapping[str, Any]],
    questions: Mapping[str, Mapping[str, Any]],
    source: str,
    allow_missing: bool = False,
) -> tuple[dict[str, str], Coverage]:
    """`{questionId: prediction}`: every balanced question predicted exactly once, and no
    prediction for a question the file does not hold (those of unbalanced ones are ignored, as
    the official `eval.py` ignores them)."""
    unbalanced = {str(qid) for qid, q in questions.items() if not q.get("isBalanced", True)}
    keys = [str(field(p, "questionId", f"{source}[{i}]")) for i, p in enumerate(predictions)]
    balanced = [str(qid) for qid in questions if str(qid) not in unbalanced]
    coverage = check_coverage(
        balanced, [key for key in keys if key not in unbalanced], source, allow_missing=allow_missing
    )
    texts = {
        key: str(field(p, "prediction", f"{source}[{i}]"))
        for i, (key, p) in enumerate(zip(keys, predictions, strict=True))
    }
    return texts, coverage


def score_gqa(questions: Mapping[str, Mapping[str, Any]], predictions: Mapping[str, str]) -> GQAScores:
    """Exact-match accuracy over the balanced questions that have a prediction (all of them
    once `index_predictions` has checked the coverage without `--allow-missing`)."""
    hits: list[bool] = []
    by_kind: dict[str, list[bool]] = {"binary": [], "open": []}
    for qid, question in questions.items():
        if not question.get("isBalanced", True) or str(qid) not in predictions:
            continue
        correct = predictions[str(qid)] == field(question, "answer", f"GQA question {qid}")
        hits.append(correct)
        structural = question.get("types", {}).get("structural")
        if structural is not None:
            by_kind["open" if structural == "query" else "binary"].append(correct)
    if not hits:
        raise ValueError("GQA: no predicted balanced questions to score")
    return GQAScores(_percent(hits), _percent(by_kind["binary"]), _percent(by_kind["open"]), len(hits))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="testdev_balanced")
    parser.add_argument("--questions", default="{tier}_questions.json", help="'{tier}' is filled in")
    parser.add_argument("--predictions", default="{tier}_predictions.json", help="'{tier}' is filled in")
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> GQAScores:
    args = build_parser().parse_args(argv)
    predictions_path = args.predictions.format(tier=args.tier)
    questions = read_json(args.questions.format(tier=args.tier))
    predictions, coverage = index_predictions(
        read_json(predictions_path), questions, predictions_path, args.allow_missing
    )
    scores = score_gqa(questions, predictions)
    for title, value in (("Binary", scores.binary), ("Open", scores.open), ("Accuracy", scores.accuracy)):
        if value is not None:
            print(f"{title}: {value:.2f}%")
    details = {"binary": scores.binary, "open": scores.open, "count": scores.count}
    report_scores(args.results_json, "gqa", scores.accuracy, coverage, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
