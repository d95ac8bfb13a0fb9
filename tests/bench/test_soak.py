"""The soak benchmark, short: 16 clients mixing good, malformed, dropped and slow requests."""

from __future__ import annotations

from llava.bench import soak


def test_a_short_soak_keeps_answers_exact_statuses_4xx_and_memory_flat(tiny_model_path):
    args = soak.parse_args(["--model-path", tiny_model_path, "--duration", "30", "--warmup", "5"])
    result = soak.run(args)
    assert result["server_errors"] == 0 and result["failures"] == 0, result["first_failures"]
    assert set(result["by_kind"]) == {"good", "bad", "dropped", "slow"}, result["by_kind"]
    assert result["good_answers"] > 50 and result["generations_cancelled"] > 0
    assert result["rss_change"] <= 0.10, result
    assert result["passed"]
