"""The playground's report from recorded results: tables over seeds, chance levels, cost, figure."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from llava.playground.backbones import SHIPPED_BACKBONES
from llava.playground.claims import CELL_BAR, claims
from llava.playground.datasets import build_data
from llava.playground.presets import get_preset
from llava.playground.report import n_parameters, write_report
from llava.playground.tasks import CATEGORIES

LLM, VISION = SHIPPED_BACKBONES / "llm", SHIPPED_BACKBONES / "vision"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_data(tmp_path_factory.mktemp("data"), get_preset("smoke").data)


def _environment(capability: str) -> dict:
    versions = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "deepspeed": None}
    return {"cpu_capability": capability, "aten_cpu_capability": None, "threads": 1, "versions": versions,
            "python": "3.11.7", "machine": "x86_64"}  # fmt: skip


def _run(
    label: str, seed: int, score: float, acc: float, align: bool = False, capability: str = "AVX2"
) -> dict:
    """One pipeline run as `run.py` records it: every category scored alike."""
    stages = [{"samples": 8, "steps": 2, "wall_time_s": 1.0, "align": True, "command": f"align {label}"}]
    stages = stages if align else []
    stages.append(
        {"samples": 16, "steps": 4, "wall_time_s": 2.0, "align": False, "command": f"train {label} {seed}"}
    )
    mme = {c: {"score": score, "acc": acc, "acc_plus": score / 100 - acc} for c in CATEGORIES}
    scores = {"mme": mme, "vqa": dict.fromkeys(CATEGORIES, score / 4)}
    scores["mme_totals"] = {"perception": 5 * score, "cognition": 3 * score}
    return {"label": label, "seed": seed, "environment": _environment(capability), "stages": stages, "eval": {
        "scores": scores, "wall_time_s": 3.0, "commands": [f"eval {label} {seed}"],
    }}  # fmt: skip


def test_report_tables_over_seeds(data, tmp_path):
    runs = [_run("A", 0, 100.0, 0.5), _run("A", 1, 150.0, 0.75), _run("B", 0, 125.0, 0.75, align=True)]
    results = {"preset": "smoke", "backbones": str(SHIPPED_BACKBONES), "data": str(data.root), "runs": runs}
    report = write_report({**results, "data_time_s": 2.0}, tmp_path, llm=LLM, vision=VISION).read_text()

    assert "(digits 0, 1, 2, 3, 4). Seeds: [0, 1]; runs per model: 2." in report
    assert "4 images per category" in report
    assert (
        "- AVX2 kernels, 1 thread(s), torch 2.13.0+cpu, transformers 5.24.0, Python 3.11.7: seed 0 (AVX2), "
        in report
    )
    # mean ± sd over seeds; margin over chance (75); p of the worst seed by guessing (4 images)
    assert (
        "| count | 75 | 125.0 ± 35.4 (62 ± 18 / 62 ± 18), 50.0 ± 35.4, p 0.262 | 125.0 (75 / 50), 50.0"
        in report
    )
    assert "| **perception** (max 1000) | 375 | 625.0 ± 176.8 | 625.0 |" in report
    assert "| **cognition** (max 600) | 225 | 375.0 ± 106.1 | 375.0 |" in report
    assert "| color | 33 | 31.2 ± 8.8 | 31.2 |" in report and "| OCR | 20 |" in report  # short-answer chance
    # every stage summed, the alignment stage's share in brackets
    assert "| A | 16 ± 0 (0 ± 0) | 4 ± 0 (0 ± 0) | 2 ± 0 (0 ± 0) | 3 ± 0 |" in report
    assert "| B | 24 (8) | 6 (2) | 3 (1) | 3 |" in report
    commands = ["train A 0", "eval A 0", "train A 1", "eval A 1", "align B", "train B 0", "eval B 0"]
    assert "```\n" + "\n".join(commands) + "\n```\n" in report
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_claims_check_every_run_and_name_the_worst_cell():
    runs = [
        _run("Inverse-LLaVA", 0, 150.0, 0.8),
        _run("Inverse-LLaVA", 0, 109.5, 0.6, capability="DEFAULT"),
        _run("LLaVA-1.5", 0, 160.0, 0.8),
        _run("LLaVA-1.5", 0, 170.0, 0.9, capability="DEFAULT"),
    ]
    bar, perception, cognition = claims(runs)
    assert not bar.passed and CELL_BAR == 110.0
    assert (
        bar.evidence
        == "24 of 32 cells clear it; the lowest is 109.5 (Inverse-LLaVA, existence, seed 0 (DEFAULT))"
    )
    # perception totals are 5x a cell, cognition 3x: LLaVA-1.5 ahead on both, in both runs
    assert perception.passed and perception.evidence.startswith("2 of 2 runs; means 825.0 vs 648.8")
    assert not cognition.passed and cognition.line().startswith(
        "- **FAIL**: Inverse-LLaVA ahead of LLaVA-1.5 on cognition, as in the paper. 0 of 2 runs"
    )
    assert "(the paper: 328.21 vs 257.86)" in cognition.evidence
    passing = claims([_run("Inverse-LLaVA", 0, 110.0, 0.6)])
    assert len(passing) == 1 and passing[0].passed  # no direction claim without both models


def test_spread_over_runs_gives_each_cells_minimum_and_median(data, tmp_path):
    runs = [_run("A", seed, score, 0.6) for seed, score in ((0, 120.0), (1, 140.0), (2, 112.0))]
    results = {"preset": "smoke", "backbones": str(SHIPPED_BACKBONES), "data": str(data.root), "runs": runs}
    report = write_report({**results, "data_time_s": 2.0}, tmp_path, llm=LLM, vision=VISION).read_text()
    assert "### Each cell over the runs (3 runs per model)" in report
    assert "| A | OCR | 124.0 | 112.0 | 120.0 | 140.0 |" in report
    assert f"- **PASS**: every MME-style cell >= {CELL_BAR:.0f} (chance 75) in every run. 24 of 24" in report


def test_parameter_counts_match_the_built_models():
    for auto_class, path in ((AutoModel, VISION), (AutoModelForCausalLM, LLM)):
        config = AutoConfig.from_pretrained(path)
        built = auto_class.from_config(config)
        assert n_parameters(auto_class, config) == sum(p.numel() for p in built.parameters())
