"""`--padding_free True` through the training entry point: the same samples per step as padded
batching, so the same losses step by step and the same trained weights (fp32, dropout off),
for both models, with gradient accumulation; the packed run computes attention per sample (its SDPA
becomes `llava.model.per_sample_attention`, the kernel run per sample). The two runs add the same terms in other orders
(one packed row, not a padded batch); the tolerances are float32's for that
(`tests/tolerances.py`), under SGD, whose weights a rounding-level gradient difference cannot
move by more than lr x that difference (Adam's can, by a whole lr)."""

from __future__ import annotations

import logging

import pytest
from transformers import AutoConfig

from llava.data.packing import PaddingFreeCollator
from llava.model import per_sample_attention
from tests import tolerances
from tests.train.train_helpers import BASELINE_FLAGS, FUSION_FLAGS, CaptureSteps, max_abs_diff, run_training

NO_DROPOUT = {"fusion_llama": ["--fusion_dropout", "0.0"], "llava_llama": []}
TRAINED = ("lora_", ".fusion.", "mm_projector")  # what these runs train


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_padding_free_run_equals_padded_run(
    run_flags, tiny_checkpoints, tmp_path, monkeypatch, caplog, model_type
):
    rows = []  # the packed rows' shapes, seen on their way to the model
    collate = PaddingFreeCollator.__call__

    def recording_collate(self, samples):
        batch = collate(self, samples)
        rows.append((len(samples), tuple(batch["input_ids"].shape)))
        return batch

    monkeypatch.setattr(PaddingFreeCollator, "__call__", recording_collate)
    cuts = []  # the samples' bounds each attention layer's kernel cut its packed row at
    blockwise = per_sample_attention.blockwise_sdpa

    def recording_blockwise(query, key, value, bounds, *args):
        cuts.append(bounds)
        return blockwise(query, key, value, bounds, *args)

    monkeypatch.setattr(per_sample_attention, "blockwise_sdpa", recording_blockwise)
    caplog.set_level(logging.INFO, logger="llava.train.train")
    method_flags = FUSION_FLAGS if model_type == "fusion_llama" else BASELINE_FLAGS
    extra = [
        *method_flags,
        *NO_DROPOUT[model_type],
        "--lora_dropout",
        "0.0",
        "--max_steps",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--save_strategy",
        "no",
        "--optim",
        "sgd",
    ]
    logged = CaptureSteps()
    padded, padded_weights = run_training(run_flags(tmp_path / "padded", *extra), callbacks=[logged])
    assert "--padding_free True" not in caplog.text and not cuts
    packed, packed_weights = run_training(run_flags(tmp_path / "packed", *extra, "--padding_free", "True"))
    assert "--padding_free True: sdpa attention computed per sample (per_sample_attention)" in caplog.text

    assert len(rows) >= 8 and all(n == 2 and shape[0] == 1 for n, shape in rows)
    llm_layers = AutoConfig.from_pretrained(tiny_checkpoints[0]).num_hidden_layers
    # every layer of the 4 x 2 micro-batches cut its packed row (two samples) at the samples' bounds
    assert len(cuts) == llm_layers * 4 * 2 and all(len(bounds) == 3 for bounds in cuts)
    assert packed["global_step"] == padded["global_step"] == 4
    assert len(packed["losses"]) == len(padded["losses"]) == 4 == len(logged.steps)
    # The LLM and the tower in series; the longest contraction is a packed row of two samples
    # (a micro-batch's tokens, summed over in the weights' gradients) or the MLP's width.
    llm, vision = (AutoConfig.from_pretrained(path) for path in tiny_checkpoints)
    depth = tolerances.transformer_depth(llm.num_hidden_layers + vision.num_hidden_layers)
    width = max(max(shape[1] for _, shape in rows), llm.intermediate_size)
    trained = sum(w.numel() for name, w in padded_weights.items() if any(k in name for k in TRAINED))
    for step, (a, b) in enumerate(zip(padded["losses"], packed["losses"], strict=True)):
        # the forward pass's own rounding, plus the earlier steps' weight drift: each trained
        # weight off by at most `drift` moves the loss by at most |gradient|_1 x drift
        drift = tolerances.sgd_weights(logged.steps[:step], width, depth)
        assert (
            abs(a - b) <= tolerances.forward(width, depth, a) + trained**0.5 * logged.steps[step][1] * drift
        )
    assert max_abs_diff(padded_weights, packed_weights) <= tolerances.sgd_weights(logged.steps, width, depth)
