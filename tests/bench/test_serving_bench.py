"""`python -m llava.bench.serving`: both schedulers and one-at-a-time on the same checkpoint, the
figures the issue names, and the mixed workload's greedy answers equal under both schedulers."""

from __future__ import annotations

import math

from llava.bench import serving
from llava.bench.serving_mixed import CLIENTS, mixed_request


def test_the_mixed_workload_alternates_short_and_long_half_with_images():
    requests = [mixed_request(c, r, 4, 4, 128) for c in range(CLIENTS) for r in range(4)]
    assert len({request.index for request in requests}) == len(requests)
    assert sum(request.short for request in requests) == len(requests) // 2
    assert sum(request.image for request in requests) == len(requests) // 2
    assert {request.max_tokens for request in requests if request.short} == {4}
    assert [mixed_request(0, r, 4, 4, 128).short for r in range(4)] == [True, False, True, False]


def test_serving_bench_reports_both_schedulers_and_their_ratios():
    flags = {
        "--hidden-size": 64,
        "--layers": 2,
        "--max-tokens": 4,
        "--requests-per-client": 1,
        "--short-tokens": 2,
        "--long-tokens": 6,
        "--mixed-requests-per-client": 2,
        "--mixed-rounds": 2,
        "--alone-requests": 2,
    }
    result = serving.main(["--json", *(str(item) for pair in flags.items() for item in pair)])
    for key in ("continuous", "request_level"):
        assert 0 < result[f"{key}_16_clients"]["mean_answer_tokens"] <= 4  # at most max_tokens
        assert 0 < result[f"mixed_{key}"]["mean_short_answer_tokens"] <= 2
        assert result[f"short_alone_{key}"]["p95_s"] >= result[f"short_alone_{key}"]["p50_s"] > 0
    ratios = (
        "continuous_vs_request_level_mixed",
        "short_p95_under_load_over_alone",
        "speedup_16_clients_continuous",
    )
    assert all(math.isfinite(result[key]) and result[key] > 0 for key in ratios)
    rounds_times_requests = 2 * 2 * CLIENTS
    assert result["mixed_answers_identical"] == result["mixed_answers"] == rounds_times_requests
    assert set(result["forward_costs"]) == {
        "prefill_one_image_question_ms",
        "step_1_rows_ms",
        f"step_{CLIENTS}_rows_ms",
    }
    assert result["conditions"]["cpus"] and "transformers" in result["conditions"]["environment"]
