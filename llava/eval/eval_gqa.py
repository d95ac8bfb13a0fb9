"""GQA scorer: exact-match accuracy on the balanced test-dev questions.

Protocol: https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md (GQA) and the
official GQA `eval.py` (https://cs.stanford.edu/people/dorarad/gqa/evaluate.html): predictions
`[{"questionId", "prediction"}]` (written by `scripts/convert_gqa_for_eval.py`) against
`{qid: {"answer", "isBalanced", "types": {"structural"}}}`; only balanced questions count, every
one needs a prediction; "open" = structural type "query", the rest "binary".
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.scoring_io import field, read_json, write_results_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GQAScores:
    accuracy: float
    binary: float | None
    open: float | None
    count: int


def _percent(hits: list[bool]) -> float | None:
    return 100.0 * sum(hits) / len(hits) if hits else None


def index_predictions(predictions: Sequence[Mapping[str, Any]], source: str) -> dict[str, str]:
    return {
        str(field(p, "questionId", f"{source}[{i}]")): str(field(p, "prediction", f"{source}[{i}]"))
        for i, p in enumerate(predictions)
    }


def score_gqa(questions: Mapping[str, Mapping[str, Any]], predictions: Mapping[str, str]) -> GQAScores:
    hits: list[bool] = []
    by_kind: dict[str, list[bool]] = {"binary": [], "open": []}
    missing = [
        qid for qid, q in questions.items() if q.get("isBalanced", True) and str(qid) not in predictions
    ]
    if missing:
        raise ValueError(f"GQA: {len(missing)} balanced questions have no prediction, e.g. {missing[:5]}")
    for qid, question in questions.items():
        if not question.get("isBalanced", True):
            continue
        correct = predictions[str(qid)] == field(question, "answer", f"GQA question {qid}")
        hits.append(correct)
        structural = question.get("types", {}).get("structural")
        if structural is not None:
            by_kind["open" if structural == "query" else "binary"].append(correct)
    if not hits:
        raise ValueError("GQA: no balanced questions to score")
    return GQAScores(_percent(hits), _percent(by_kind["binary"]), _percent(by_kind["open"]), len(hits))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="testdev_balanced")
    parser.add_argument("--questions", default="{tier}_questions.json", help="'{tier}' is filled in")
    parser.add_argument("--predictions", default="{tier}_predictions.json", help="'{tier}' is filled in")
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    return parser


def main(argv: Sequence[str] | None = None) -> GQAScores:
    args = build_parser().parse_args(argv)
    predictions_path = args.predictions.format(tier=args.tier)
    questions = read_json(args.questions.format(tier=args.tier))
    scores = score_gqa(questions, index_predictions(read_json(predictions_path), predictions_path))
    for title, value in (("Binary", scores.binary), ("Open", scores.open), ("Accuracy", scores.accuracy)):
        if value is not None:
            print(f"{title}: {value:.2f}%")
    write_results_json(
        args.results_json, "gqa", scores.accuracy, binary=scores.binary, open=scores.open, count=scores.count
    )
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
