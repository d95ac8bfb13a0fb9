"""The paired percentile bootstrap: two runs scored on the same resampled test items.

Method: the percentile interval of the bootstrap (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13, https://doi.org/10.1201/9780429246593), with paired resampling: both
systems are scored on the same draw of test items (Koehn, 2004, "Statistical Significance Tests for
Machine Translation Evaluation", https://aclanthology.org/W04-3250/). The items are resampled
within strata: each stratum keeps its size, as the benchmark fixes it (a split, a subtask, a
category). A seeded `numpy.random.Generator` draws the resamples.

A benchmark states its units as additive statistics per unit (`Stratum`) and its metrics as a
function of their sums (`PairedUnits.metrics`), so one resample is a weighted sum: how often each
unit was drawn, times its statistics. The statistics are counts, so the sums are exact and two
identical runs differ by exactly 0 on every resample.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95
_BATCH = 200  # resamples drawn at once; fixed, so a seed gives the same draws on every machine

Stats = np.ndarray  # [units, statistics]: additive per-unit statistics, summed over a resample
MetricFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Stratum:
    """The units of one stratum, each with its additive statistics under run a and run b (same
    units in the same order)."""

    name: str
    a: Stats
    b: Stats

    def __post_init__(self) -> None:
        if self.a.shape != self.b.shape or self.a.ndim != 2 or not len(self.a):
            raise ValueError(f"stratum {self.name!r}: statistics of shapes {self.a.shape} and {self.b.shape}")


@dataclass(frozen=True)
class PairedUnits:
    """A benchmark's resampling units. `metrics` maps `{stratum: statistics summed over its units}`
    (shape [..., statistics]) to `{metric: value}` (shape [...]), the same for the full data
    (no leading axis) and for a batch of resamples."""

    strata: tuple[Stratum, ...]
    metrics: MetricFn
    description: str  # "questions, within each split"


@dataclass(frozen=True)
class MetricComparison:
    a: float
    b: float
    difference: float
    ci95: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "difference": self.difference, "ci95": list(self.ci95)}


def resample_counts(rng: np.random.Generator, units: int, size: int) -> np.ndarray:
    """How often each unit is drawn in each of `size` resamples of `units` draws with replacement."""
    picks = rng.integers(0, units, size=(size, units))  # [size, units] drawn unit indices
    flat = picks + units * np.arange(size)[:, None]
    return np.bincount(flat.ravel(), minlength=size * units).reshape(size, units).astype(np.float64)


def paired_bootstrap(
    units: PairedUnits, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, MetricComparison]:
    """Every metric of run a and run b on the full data, b - a, and the percentile interval of
    b - a over `resamples` paired resamples (stratified: each stratum resampled on its own)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    point_a = units.metrics({s.name: s.a.sum(axis=0) for s in units.strata})
    point_b = units.metrics({s.name: s.b.sum(axis=0) for s in units.strata})
    rng = np.random.default_rng(seed)
    diffs = {name: np.empty(resamples) for name in point_a}
    for start in range(0, resamples, _BATCH):
        size = min(_BATCH, resamples - start)
        sums_a, sums_b = {}, {}
        for stratum in units.strata:
            counts = resample_counts(rng, len(stratum.a), size)  # [size, units]
            sums_a[stratum.name] = counts @ stratum.a  # [size, stats]
            sums_b[stratum.name] = counts @ stratum.b
        metrics_a, metrics_b = units.metrics(sums_a), units.metrics(sums_b)
        for name, values in diffs.items():
            values[start : start + size] = metrics_b[name] - metrics_a[name]
    tail = 100 * (1 - CONFIDENCE) / 2
    results = {}
    for name, values in diffs.items():
        a, b = float(point_a[name]), float(point_b[name])
        lo, hi = np.percentile(values, [tail, 100 - tail])
        results[name] = MetricComparison(a, b, b - a, (float(lo), float(hi)))
    return results


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0 (the scorers' convention for an empty count)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def pair_strata(
    name: str,
    units_a: Mapping[Hashable, Sequence[float]],
    units_b: Mapping[Hashable, Sequence[float]],
    sources: tuple[str, str],
) -> Stratum:
    """A stratum from `{unit: statistics}` of each run, in run a's order; the two runs must have
    the same units (the scorers' coverage checks make it so for complete answer files)."""
    only_a = [key for key in units_a if key not in units_b]
    only_b = [key for key in units_b if key not in units_a]
    if only_a or only_b:
        raise ValueError(
            f"{name}: {sources[0]} and {sources[1]} do not cover the same items "
            f"({len(only_a)} only in the first, e.g. {only_a[:3]}; {len(only_b)} only in the second, "
            f"e.g. {only_b[:3]})"
        )
    keys = list(units_a)
    a = np.array([units_a[key] for key in keys], dtype=np.float64)
    b = np.array([units_b[key] for key in keys], dtype=np.float64)
    return Stratum(name, a, b)
