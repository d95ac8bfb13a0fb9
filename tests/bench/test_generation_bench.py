"""The generation benchmark runs end to end at tiny shapes and reports every figure (no timing is
checked: the numbers are the benchmark's output, not a test's)."""

from __future__ import annotations

import pytest

from llava.bench.generation import main

TINY = [
    "--hidden-size",
    "64",
    "--layers",
    "2",
    "--vocab-size",
    "300",
    "--image-tokens",
    "16",
    "--prompt-tokens",
    "6",
    "--new-tokens",
    "4",
    "--repeats",
    "1",
    "--device",
    "cpu",
]


def test_generation_bench_reports_cache_and_decode_floor(capsys):
    result = main([*TINY, "--json"])
    assert result["identical"] is True  # cached and cache-free greedy decoding agree
    assert result["prompt_positions"] == 6 + 16 and result["new_tokens"] == 4
    assert result["cached_tokens_per_s"] > 0 and result["uncached_tokens_per_s"] > 0
    for key in ("plain_decode", "fusion_decode", "baseline_decode"):  # differences of timings: any sign
        assert isinstance(result[f"{key}_tokens_per_s"], float)
    assert (
        result["fusion_decode_ratio"]
        == result["fusion_decode_tokens_per_s"] / result["plain_decode_tokens_per_s"]
    )


@pytest.mark.slow
def test_generation_bench_compiled_fusion_decodes_the_same_tokens():
    """The published layer compiled (prefill and decode steps) against the eager model."""
    result = main([*TINY, "--fusion-variant", "published", "--compile-fusion", "--json"])
    compiled = result["compiled_fusion"]
    assert compiled["fusion_variant"] == "published" and compiled["compiled_tokens_identical"] is True
    assert compiled["compiled_over_eager"] > 0 and isinstance(compiled["compile_seconds"], float)
