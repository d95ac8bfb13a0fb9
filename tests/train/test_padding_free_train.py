"""`--padding_free True` through the training entry point: the same samples per step as padded
batching, so the same losses step by step and the same trained weights (fp32, dropout off),
for both models, with gradient accumulation."""

from __future__ import annotations

import pytest

from llava.data.packing import PaddingFreeCollator
from tests.train.train_helpers import BASELINE_FLAGS, FUSION_FLAGS, max_abs_diff, run_training

NO_DROPOUT = {"fusion_llama": ["--fusion_dropout", "0.0"], "llava_llama": []}


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_padding_free_run_equals_padded_run(run_flags, tmp_path, monkeypatch, caplog, model_type):
    rows = []  # the packed rows' shapes, seen on their way to the model
    collate = PaddingFreeCollator.__call__

    def recording_collate(self, samples):
        batch = collate(self, samples)
        rows.append((len(samples), tuple(batch["input_ids"].shape)))
        return batch

    monkeypatch.setattr(PaddingFreeCollator, "__call__", recording_collate)
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
    ]
    padded, padded_weights = run_training(run_flags(tmp_path / "padded", *extra))
    assert "--padding_free True under" not in caplog.text
    packed, packed_weights = run_training(run_flags(tmp_path / "packed", *extra, "--padding_free", "True"))
    assert "--padding_free True under sdpa attention: exact" in caplog.text  # the tiny runs' SDPA

    assert len(rows) >= 8 and all(n == 2 and shape[0] == 1 for n, shape in rows)
    assert packed["global_step"] == padded["global_step"] == 4
    assert len(packed["losses"]) == len(padded["losses"]) == 4
    for step, (a, b) in enumerate(zip(padded["losses"], packed["losses"], strict=True)):
        assert abs(a - b) <= 1e-5, (step, a, b)
    assert max_abs_diff(padded_weights, packed_weights) <= 1e-5
