"""The packed-row attention benchmark: its kernels agree with SDPA under the block-diagonal mask,
and its report holds what it promises."""

from __future__ import annotations

import json

from llava.bench.packed_attention import main
from tests import tolerances


def test_packed_attention_bench_reports_every_kernel(capsys):
    report = main(
        ["--json", "--batch", "4", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--repeats", "1"]
    )
    assert json.loads(capsys.readouterr().out) == report
    assert set(report["results"]) == {"blockwise_sdpa", "packed_mask", "padded"}  # no varlen_flash off CUDA
    assert report["results"]["packed_mask"]["max_rel_diff_output"] == 0.0
    # Per sample or over the masked row, the same float32 sums in another blocking: a score sums
    # over the head width, an output (and a gradient) over at most the row's positions, two
    # contractions deep (four for the gradients: the backward's transposed ones too); relative to
    # the reference's largest magnitude.
    width = max(report["row_positions"], report["head_dim"])
    blockwise = report["results"]["blockwise_sdpa"]
    assert blockwise["max_rel_diff_output"] <= tolerances.forward(width, 2, 1.0)
    assert blockwise["max_rel_diff_grads"] <= tolerances.forward(width, 4, 1.0)
    assert all(result["ms"] > 0 for result in report["results"].values())
    assert report["blockwise_over_packed_mask"] == blockwise["ms"] / report["results"]["packed_mask"]["ms"]
