"""The playground step benchmark trains the preset's pipeline through the real entry point in both
modes and prints its figures alone on stdout."""

from __future__ import annotations

import json

import pytest

from llava.bench.playground_step import main


@pytest.mark.slow
def test_playground_step_bench_times_both_modes(capsys):
    report = main(["--preset", "smoke", "--steps", "1", "--warmup", "1", "--rounds", "1", "--json"])
    assert json.loads(capsys.readouterr().out) == report
    assert report["preset"] == "smoke" and report["pipeline"] == "inverse_llava" and report["batch"] == 4
    padded, free = report["step_ms"]["padded"], report["step_ms"]["padding_free"]
    assert padded > 0 and free > 0 and report["padding_free_over_padded"] == free / padded
