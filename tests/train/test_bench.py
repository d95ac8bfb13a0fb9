"""The training-step benchmark runs and reports both models on identical inputs."""

from __future__ import annotations

import pytest

from llava.bench.train_step import run


def test_train_step_benchmark_reports_both_models():
    report = run("cpu", steps=1, warmup=0, device="cpu")
    fusion, baseline = report["results"]["fusion"], report["results"]["baseline"]
    assert fusion["step_ms"] > 0 and baseline["step_ms"] > 0
    assert report["fusion_over_baseline"] == fusion["step_ms"] / baseline["step_ms"]
    assert fusion["saved_activation_mb"] > 0 and fusion["trained_parameters"] < fusion["total_parameters"]
    assert report["image_positions"] == 64


@pytest.mark.slow
def test_train_step_benchmark_times_the_compiled_fusion_layer():
    report = run("tiny", steps=1, warmup=1, device="cpu", compiled=True)
    compiled, eager = report["results"]["fusion_compiled"], report["results"]["fusion"]
    assert report["compiled_over_eager"] == compiled["step_ms"] / eager["step_ms"]
    assert compiled["trained_parameters"] == eager["trained_parameters"]
    assert isinstance(report["compile_seconds"], float)
    with pytest.raises(ValueError, match="warmup must be at least 1"):
        run("tiny", steps=1, warmup=0, device="cpu", compiled=True)
