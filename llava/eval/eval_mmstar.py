"""MMStar scorer: overall accuracy, and accuracy per core category (6) and per l2 category (18).

Protocol: the official evaluation, https://github.com/MMStar-Benchmark/MMStar
(eval/vlmeval/evaluate/mmstar.py). Answer and prediction are lower-cased, stripped, newlines made
spaces; the prediction is right when the answer letter is its first character, or its second
after "(", or follows "option " or "the answer is " at its start. The rule only looks at the
start: "Answer: B" reads as "a". The final score is the right answers over all questions (1500),
a core category's over its questions (250 each). lmms-eval's `mmstar` task extracts the letter
more leniently and averages its l2 categories instead; the official rule is kept here.

The question file (`llava.eval.question_files mmstar`) holds each question's `answer`,
`category` and `l2_category`; every question needs exactly one answer, and answers made from
another question file are refused.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.eval_exact_match import index_predictions
from llava.eval.run_record import LOADER_RUNNER, check_question_file
from llava.eval.scoring_io import add_results_arguments, field, read_jsonl, report_scores

logger = logging.getLogger(__name__)

# The core categories and their l2 categories, in the official order.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "coarse perception": ("image scene and topic", "image style & quality", "image emotion"),
    "fine-grained perception": ("object counting", "recognition", "localization"),
    "instance reasoning": (
        "single-instance reasoning",
        "cross-instance attribute reasoning",
        "cross-instance relation reasoning",
    ),
    "logical reasoning": ("code & sequence reasoning", "diagram reasoning", "common reasoning"),
    "science & technology": (
        "biology & chemistry & physics",
        "electronics & energy & mechanical eng.",
        "geography & earth science & agriculture",
    ),
    "math": ("geometry", "numeric commonsense and calculation", "statistical reasoning"),
}
# Prefixes after which the official rule reads the letter.
_LEAD_INS = ("(", "option ", "the answer is ")


def _normalise(text: str) -> str:
    return text.lower().strip().replace("\n", " ")


def is_correct(prediction: str, answer: str) -> bool:
    """The official rule: the answer is the prediction's first character, or the character right
    after one of `_LEAD_INS` at its start. An empty prediction is wrong."""
    answer, predicted = _normalise(answer), _normalise(prediction)
    if not predicted:
        return False
    if answer == predicted[0]:
        return True
    for lead in _LEAD_INS:
        if predicted.startswith(lead) and len(predicted) > len(lead):
            return answer == predicted[len(lead)]
    return False


@dataclass(frozen=True)
class MMStarScores:
    overall: float
    categories: dict[str, float]
    l2_categories: dict[str, float]
    count: int


def _percent(hits: list[bool]) -> float:
    return 100.0 * sum(hits) / len(hits)


def score_mmstar(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[str, str], source: str = "questions"
) -> MMStarScores:
    """Accuracies x 100 over the questions that have a prediction (all of them once the coverage
    has been checked without `--allow-missing`); a category or l2 pair outside MMStar's is an
    error naming the question."""
    by_category: dict[str, list[bool]] = {}
    by_l2: dict[str, list[bool]] = {}
    hits: list[bool] = []
    for i, question in enumerate(questions, start=1):
        where = f"{source}: record {i}"
        category, l2 = field(question, "category", where), field(question, "l2_category", where)
        if l2 not in CATEGORIES.get(category, ()):
            raise ValueError(f"{where}: ({category!r}, {l2!r}) is not one of MMStar's category pairs")
        qid = str(field(question, "question_id", where))
        if qid not in predictions:
            continue
        right = is_correct(predictions[qid], str(field(question, "answer", where)))
        hits.append(right)
        by_category.setdefault(category, []).append(right)
        by_l2.setdefault(l2, []).append(right)
    if not hits:
        raise ValueError(f"{source}: no answered questions")
    return MMStarScores(
        overall=_percent(hits),
        categories={name: _percent(by_category[name]) for name in CATEGORIES if name in by_category},
        l2_categories={l2: _percent(by_l2[l2]) for l2s in CATEGORIES.values() for l2 in l2s if l2 in by_l2},
        count=len(hits),
    )


def print_scores(scores: MMStarScores) -> None:
    for category, l2s in CATEGORIES.items():
        if category in scores.categories:
            print(f"{category}: {scores.categories[category]:.2f}%")
            for l2 in l2s:
                if l2 in scores.l2_categories:
                    print(f"  {l2}: {scores.l2_categories[l2]:.2f}%")
    print(f"Samples: {scores.count}, Final score: {scores.overall:.2f}%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--question-file", required=True, help="the MMStar question file (llava.eval.question_files mmstar)"
    )
    parser.add_argument("--result-file", required=True, help="answers jsonl of the runner")
    add_results_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> MMStarScores:
    args = build_parser().parse_args(argv)
    check_question_file(args.result_file, args.question_file, runners=(LOADER_RUNNER,))
    questions = read_jsonl(args.question_file)
    predictions, coverage = index_predictions(
        read_jsonl(args.result_file), questions, args.result_file, args.question_file, args.allow_missing
    )
    scores = score_mmstar(questions, predictions, args.question_file)
    print_scores(scores)
    details = {"categories": scores.categories, "l2_categories": scores.l2_categories}
    report_scores(args.results_json, "mmstar", scores.overall, coverage, **details)
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
