"""The training-step benchmark runs and reports both models on identical inputs."""

from __future__ import annotations

from llava.bench.train_step import run


def test_train_step_benchmark_reports_both_models():
    report = run("cpu", steps=1, warmup=0, device="cpu")
    fusion, baseline = report["results"]["fusion"], report["results"]["baseline"]
    assert fusion["step_ms"] > 0 and baseline["step_ms"] > 0
    assert report["fusion_over_baseline"] == fusion["step_ms"] / baseline["step_ms"]
    assert fusion["saved_activation_mb"] > 0 and fusion["trained_parameters"] < fusion["total_parameters"]
    assert report["image_positions"] == 64
