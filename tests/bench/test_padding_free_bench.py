"""The padding-free benchmark: the three modes on the same micro-batches (padding-free under the
attention `--padding_free True` runs), equal losses and gradients, its mix and its sample orders."""

from __future__ import annotations

import json
from types import SimpleNamespace

from llava.bench import padding_free
from llava.bench.padding_free import MIX, draw_samples, expanded_length, main, order_samples
from llava.model.per_sample_attention import PER_SAMPLE
from tests import tolerances


def test_padding_free_bench_reports_both_modes(capsys, monkeypatch):
    sizes = {"loss": [], "grad": []}  # what the differences are measured on: losses, the padded gradients
    timed_step, max_grad_diff = padding_free.timed_step, padding_free.max_grad_diff

    def recording_step(model, batch, num_items):
        seconds, loss = timed_step(model, batch, num_items)
        sizes["loss"].append(loss.abs().item())
        return seconds, loss

    def recording_diff(padded, other):
        sizes["grad"].append(
            max(p.grad.abs().max().item() for p in padded.parameters() if p.grad is not None)
        )
        return max_grad_diff(padded, other)

    monkeypatch.setattr(padding_free, "timed_step", recording_step)
    monkeypatch.setattr(padding_free, "max_grad_diff", recording_diff)
    report = main(["--json", "--batch", "4", "--steps", "1", "--warmup", "0"])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))
    # on a CPU the entry point trains under SDPA, which --padding_free True runs per sample
    assert report["attention"] == {"padded": "sdpa", "padding_free": PER_SAMPLE, "packed_mask": "sdpa"}
    padded, free = report["results"]["padded"], report["results"]["padding_free"]
    packed_mask = report["results"]["packed_mask"]
    assert report["tokens_per_s_ratio"] == free["tokens_per_s"] / padded["tokens_per_s"]
    assert report["tokens_per_s_ratio_packed_mask"] == packed_mask["tokens_per_s"] / padded["tokens_per_s"]
    # the packed row's SDPA computes the whole [S, S] scores, each sample's block alone less
    assert free["flops_per_step"] < packed_mask["flops_per_step"]
    assert report["flops_ratio_packed_mask"] == packed_mask["flops_per_step"] / padded["flops_per_step"]
    # One comparison, before any optimizer step: the packed rows and the padded batch add the same
    # terms in other orders (twice the contractions for a gradient); the longest is a packed row
    # (summed over in the weights' gradients) or the MLP.
    llm, vision = SimpleNamespace(**report["llm"]), SimpleNamespace(**report["vision"])
    width, depth = tolerances.network(llm, vision, tokens=int(free["positions_per_step"]))
    assert report["max_loss_diff"] <= tolerances.forward(width, depth, max(sizes["loss"]))
    assert report["max_grad_diff"] <= tolerances.forward(width, 2 * depth, max(sizes["grad"]))
    assert free["padding_fraction"] == 0.0 and free["positions_per_step"] == report["useful_tokens_per_step"]
    assert packed_mask["positions_per_step"] == free["positions_per_step"]
    assert padded["positions_per_step"] >= free["positions_per_step"]
    assert free["flops_per_step"] > 0 and padded["flops_per_step"] > 0
    assert sum(kind["drawn"] for kind in report["mix"].values()) == 4


def test_mix_and_orders():
    samples = draw_samples(200, image_positions=64)
    kinds = [s["kind"] for s in samples]
    assert all(kinds.count(kind.name) > 0 for kind in MIX)
    assert all((s["images"] is None) == (s["kind"] == "sharegpt_text_only") for s in samples)
    assert max(expanded_length(s, 64) for s in samples) <= 2048 * 64 // 576 + 1
    shuffled = order_samples(samples, "shuffled", batch=4)
    assert sorted(map(id, shuffled)) == sorted(map(id, samples))
    grouped = order_samples(samples, "grouped", batch=4)
    assert sorted(map(id, grouped)) == sorted(map(id, samples))
    for start in range(0, 96, 4):  # the first three global steps of 4 x 8 samples (full ones)
        micro = grouped[start : start + 4]
        assert len({s["images"] is None for s in micro}) == 1
