"""LLaVA-Bench reviews' scores: the judge's score pair read from its first line, and the relative
score per category (LLaVA's `summarize_gpt_review.py`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llava.eval.scoring_io import check_coverage, field

logger = logging.getLogger(__name__)

CATEGORY_PREFIX = "llava_bench_"


def parse_scores(review: str) -> tuple[float, float] | None:
    """The two scores on the review's first line ("8 7", "8, 7"); None when unreadable."""
    first_line = review.split("\n", 1)[0].replace(",", " ")
    parts = first_line.split()
    if len(parts) != 2:
        return None
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        return None


@dataclass(frozen=True)
class CategorySummary:
    relative: float
    reference: float
    model: float
    count: int


def summarize(
    reviews: Sequence[Mapping[str, Any]], source: str = "reviews", expected: Sequence[Any] | None = None
) -> dict[str, CategorySummary]:
    """Per category and "all": relative score and the x10 mean scores of GPT-4 and the model.

    Each question is reviewed at most once, and with `expected` (the question ids) every one of
    them exactly once (`CoverageError` otherwise).

    As in LLaVA's summariser, the means are rounded to 3 decimals before the ratio. Reviews
    whose scores could not be parsed ([-1, -1]) are left out and logged, rather than averaged in.
    """
    pairs: dict[str, list[tuple[float, float]]] = {}
    failed = 0
    keys = [review.get("question_id", i) for i, review in enumerate(reviews, start=1)]
    check_coverage(expected if expected is not None else list(dict.fromkeys(keys)), keys, source)
    for i, review in enumerate(reviews, start=1):
        ref, model = field(review, "tuple", f"reviews: record {i}")
        if ref < 0 or model < 0:
            failed += 1
            continue
        category = str(review.get("category", "all")).removeprefix(CATEGORY_PREFIX)
        for key in {category, "all"}:
            pairs.setdefault(key, []).append((float(ref), float(model)))
    if failed:
        logger.warning("%d reviews without a score pair were left out", failed)
    summary = {}
    for key, values in sorted(pairs.items()):
        mean_ref = round(sum(r for r, _ in values) / len(values), 3)
        mean_model = round(sum(m for _, m in values) / len(values), 3)
        relative = 100.0 * mean_model / mean_ref if mean_ref else 0.0
        summary[key] = CategorySummary(
            round(relative, 1), round(mean_ref * 10, 1), round(mean_model * 10, 1), len(values)
        )
    return summary
