"""What a playground report claims, each with its numbers and PASS or FAIL, checked over every run
it holds (seeds x CPU kernels): every MME-style cell clears `CELL_BAR`, and the paper's direction
on perception and on cognition. Plus each cell's spread over the runs (mean, minimum, median,
maximum), which is what the docs quote instead of one run's digits."""

from __future__ import annotations

import dataclasses
from statistics import mean, median

from llava.eval.published import PAPER_MME_TOTALS
from llava.playground import tasks

CELL_BAR = 110.0  # every MME-style cell of every model, in every run (chance 75, max 200)
# The paper's pair for its direction claims (MME totals, Vicuna-7B): its LLaVA-1.5 LoRA run and Inverse-LLaVA.
PAPER_PAIR = {"LLaVA-1.5": "LLaVA-1.5-7B-LoRA", "Inverse-LLaVA": "Inverse-LLaVA"}


def run_name(run: dict) -> str:
    """`seed 3 (AVX2)`: which run a number came from (seed and the CPU kernels it ran under)."""
    environment = run.get("environment") or {}
    return f"seed {run['seed']} ({environment.get('cpu_capability', 'kernels unrecorded')})"


@dataclasses.dataclass(frozen=True)
class Claim:
    statement: str
    passed: bool
    evidence: str

    def line(self) -> str:
        return f"- **{'PASS' if self.passed else 'FAIL'}**: {self.statement}. {self.evidence}"


def cell_scores(runs: list[dict]) -> dict[tuple[str, str], list[tuple[float, str]]]:
    """`(label, category) -> [(MME-style score, run name), ...]` over the runs."""
    cells: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for run in runs:
        for category, mme in run["eval"]["scores"]["mme"].items():
            cells.setdefault((run["label"], category), []).append((mme["score"], run_name(run)))
    return cells


def spread_rows(runs: list[dict]) -> list[tuple[str, str, float, float, float, float]]:
    """Per model (in run order) and category (MME's order): `(label, category, mean, min, median,
    max)` of the MME-style score over the runs."""
    cells = cell_scores(runs)
    labels = dict.fromkeys(label for label, _ in cells)
    rows = []
    for label in labels:
        for category in (c for c in tasks.CATEGORIES if (label, c) in cells):
            scores = [score for score, _ in cells[label, category]]
            rows.append((label, category, mean(scores), min(scores), median(scores), max(scores)))
    return rows


def _bar_claim(runs: list[dict]) -> Claim:
    cells = cell_scores(runs)
    ordered = sorted(cells, key=lambda key: tasks.CATEGORIES.index(key[1]))  # ties: MME's order
    (label, category), (lowest, where) = min(((k, min(cells[k])) for k in ordered), key=lambda kv: kv[1][0])
    under = sum(score < CELL_BAR for values in cells.values() for score, _ in values)
    total = sum(len(values) for values in cells.values())
    evidence = f"{total - under} of {total} cells clear it; the lowest is {lowest:.1f} ({label}, {category}, {where})"
    return Claim(f"every MME-style cell >= {CELL_BAR:.0f} (chance 75) in every run", under == 0, evidence)


def _direction_claim(runs: list[dict], total: str, ahead: str, behind: str) -> Claim:
    """Whether `ahead` scores above `behind` on the `total` panel in every run both made."""
    by_run = {label: {} for label in (ahead, behind)}
    for run in runs:
        if run["label"] in by_run:
            by_run[run["label"]][run_name(run)] = run["eval"]["scores"]["mme_totals"][total]
    shared = sorted(set(by_run[ahead]) & set(by_run[behind]))
    wins = sum(by_run[ahead][r] > by_run[behind][r] for r in shared)
    paper = {label: PAPER_MME_TOTALS[PAPER_PAIR[label]][total] for label in (ahead, behind)}
    evidence = (
        f"{wins} of {len(shared)} runs; means {mean(by_run[ahead][r] for r in shared):.1f} vs "
        f"{mean(by_run[behind][r] for r in shared):.1f} (the paper: {paper[ahead]} vs {paper[behind]})"
    )
    statement = f"{ahead} ahead of {behind} on {total}, as in the paper"
    return Claim(statement, wins == len(shared), evidence)


def claims(runs: list[dict]) -> list[Claim]:
    """The report's claims over `runs`; the paper's directions only where both models ran."""
    found = [_bar_claim(runs)] if runs else []
    labels = {run["label"] for run in runs}
    if set(PAPER_PAIR) <= labels:
        found.append(_direction_claim(runs, "perception", "LLaVA-1.5", "Inverse-LLaVA"))
        found.append(_direction_claim(runs, "cognition", "Inverse-LLaVA", "LLaVA-1.5"))
    return found
