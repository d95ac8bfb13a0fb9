"""The playground's report from recorded results: tables over seeds, chance levels, cost, figure."""

from __future__ import annotations

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from llava.playground.backbones import SHIPPED_BACKBONES
from llava.playground.datasets import build_data
from llava.playground.presets import get_preset
from llava.playground.report import n_parameters, write_report
from llava.playground.tasks import CATEGORIES

LLM, VISION = SHIPPED_BACKBONES / "llm", SHIPPED_BACKBONES / "vision"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_data(tmp_path_factory.mktemp("data"), get_preset("smoke").data)


def _run(label: str, seed: int, score: float, acc: float, align: bool = False) -> dict:
    """One pipeline run as `run.py` records it: every category scored alike."""
    stages = [{"samples": 8, "steps": 2, "wall_time_s": 1.0, "align": True, "command": f"align {label}"}]
    stages = stages if align else []
    stages.append(
        {"samples": 16, "steps": 4, "wall_time_s": 2.0, "align": False, "command": f"train {label} {seed}"}
    )
    mme = {c: {"score": score, "acc": acc, "acc_plus": score / 100 - acc} for c in CATEGORIES}
    scores = {"mme": mme, "vqa": dict.fromkeys(CATEGORIES, score / 4)}
    scores["mme_totals"] = {"perception": 5 * score, "cognition": 3 * score}
    return {"label": label, "seed": seed, "stages": stages, "eval": {
        "scores": scores, "wall_time_s": 3.0, "commands": [f"eval {label} {seed}"],
    }}  # fmt: skip


def test_report_tables_over_seeds(data, tmp_path):
    runs = [_run("A", 0, 100.0, 0.5), _run("A", 1, 150.0, 0.75), _run("B", 0, 125.0, 0.75, align=True)]
    results = {"preset": "smoke", "backbones": str(SHIPPED_BACKBONES), "data": str(data.root), "runs": runs}
    report = write_report({**results, "data_time_s": 2.0}, tmp_path, llm=LLM, vision=VISION).read_text()

    assert "(digits 0, 1, 2, 3, 4). Seeds: [0, 1]." in report and "4 images per category" in report
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


def test_parameter_counts_match_the_built_models():
    for auto_class, path in ((AutoModel, VISION), (AutoModelForCausalLM, LLM)):
        config = AutoConfig.from_pretrained(path)
        built = auto_class.from_config(config)
        assert n_parameters(auto_class, config) == sum(p.numel() for p in built.parameters())
