"""`--compile_fusion True` through the training entry point: the run compiles its fusion layer and
trains as the eager run does (the same losses step by step and the same trained weights, up to
float32's reordering of the same sums), and saves the same tensors under the same names."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from llava.model import compiled_fusion
from tests import tolerances
from tests.train.train_helpers import FUSION_FLAGS, CaptureSteps, max_abs_diff, run_training, trained_state

TRAINED = ("lora_", ".fusion.")  # what these runs train
EXTRA = [
    *FUSION_FLAGS,
    "--fusion_dropout",
    "0.0",
    "--lora_dropout",
    "0.0",
    "--max_steps",
    "2",
    "--save_strategy",
    "no",
    "--optim",
    "sgd",
]


@pytest.mark.slow
def test_compiled_fusion_run_equals_eager_run(run_flags, tiny_checkpoints, tmp_path, monkeypatch):
    compiled_counts = []
    compile_fusion = compiled_fusion.compile_fusion

    def recording_compile(model, *args, **kwargs):
        compiled_counts.append(compile_fusion(model, *args, **kwargs))
        return compiled_counts[-1]

    monkeypatch.setattr("llava.train.train.compile_fusion", recording_compile)
    logged = CaptureSteps()
    eager, eager_weights = run_training(run_flags(tmp_path / "eager", *EXTRA), callbacks=[logged])
    assert not compiled_counts
    compiled, compiled_weights = run_training(
        run_flags(tmp_path / "compiled", *EXTRA, "--compile_fusion", "True")
    )
    assert compiled_counts == [1]  # the one fusion layer (layer 0)

    # the same sums in other orders (inductor fuses the fusion layer's): float32's bound over the
    # LLM and the tower in series, its widest contraction the MLP's or a batch's positions
    llm, vision = (AutoConfig.from_pretrained(path) for path in tiny_checkpoints)
    depth = tolerances.transformer_depth(llm.num_hidden_layers + vision.num_hidden_layers)
    width = max(llm.intermediate_size, 2 * 128)  # two samples of at most --model_max_length positions
    trained = sum(w.numel() for name, w in eager_weights.items() if any(k in name for k in TRAINED))
    assert len(eager["losses"]) == len(compiled["losses"]) == 2 == len(logged.steps)
    for step, (a, b) in enumerate(zip(eager["losses"], compiled["losses"], strict=True)):
        # the forward pass's own rounding, plus the earlier steps' weight drift: each trained
        # weight off by at most `drift` moves the loss by at most |gradient|_1 x drift
        drift = tolerances.sgd_weights(logged.steps[:step], width, depth)
        assert (
            abs(a - b) <= tolerances.forward(width, depth, a) + trained**0.5 * logged.steps[step][1] * drift
        )
    assert max_abs_diff(eager_weights, compiled_weights) <= tolerances.sgd_weights(logged.steps, width, depth)
    eager_saved, compiled_saved = trained_state(tmp_path / "eager"), trained_state(tmp_path / "compiled")
    assert list(compiled_saved) == list(eager_saved) and any(".fusion." in name for name in eager_saved)
