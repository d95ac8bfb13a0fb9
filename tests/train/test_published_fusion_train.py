"""A tiny run of the training entry point with the published model's fusion layer
(`--fusion_variant published`): it trains the fusion layer and LoRA only, saves the layer under
the bundle's names, and the saved model loads back with the trained model's logits; under ZeRO-3
it trains as in one process."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, TrainerCallback

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.published_fusion import PublishedFusion
from tests import tolerances
from tests.model.test_published_fusion import BUNDLE_NAMES, model_tolerance
from tests.train.test_deepspeed import EPSILON, MAX_GRAD_NORM, _torchrun
from tests.train.train_helpers import (
    REPO,
    CaptureSteps,
    initial_weights,
    max_abs_diff,
    run_training,
    trained_state,
)


class LogitsAtEnd(TrainerCallback):
    """The trained model's logits on one prompt with an image, at the end of training."""

    def __init__(self, input_ids: torch.Tensor, images: torch.Tensor):
        self.input_ids, self.images, self.logits = input_ids, images, None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=self.input_ids, images=self.images).logits  # [1, T, V]


def test_training_run_trains_saves_and_loads_back(run_flags, tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints
    out = tmp_path / "published"
    argv = run_flags(
        out,
        "--model_type",
        "fusion_llama",
        "--fusion_variant",
        "published",
        "--fusion_lr",
        "4e-3",
        "--max_steps",
        "12",
        "--save_steps",
        "12",
        "--activation_checkpointing",
        "True",
    )  # fmt: skip (no --lora_layer_ids_to_skip: LoRA skips the fusion layer by default)
    prompt = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    at_end = LogitsAtEnd(prompt, images)
    summary, weights = run_training(argv, callbacks=[at_end])

    losses = summary["losses"]
    assert summary["global_step"] == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses  # it learns
    assert summary["trained_groups"] == {"lora": 42, "fusion": len(BUNDLE_NAMES)}
    assert not any(t.startswith("model.layers.0.") for t in summary["lora_targets"])  # fusion layer: no LoRA
    start = initial_weights("fusion_llama", llm, vision, fusion_variant="published")
    fusion = [n for n in start if ".fusion." in n]
    assert len(fusion) == len(BUNDLE_NAMES) and all(not torch.equal(weights[n], start[n]) for n in fusion)
    frozen = [n for n in start if ".fusion." not in n]
    assert [n for n in frozen if not torch.equal(weights[n], start[n])] == []

    saved = load_file(out / "non_lora_trainables.safetensors")
    assert set(saved) == {f"model.layers.0.self_attn.fusion.{name}" for name in BUNDLE_NAMES}
    _, loaded, _, _ = load_pretrained_model(str(out), model_base=llm, device="cpu")
    assert loaded.config.fusion_variant == "published"
    assert isinstance(loaded.model.layers[0].self_attn.fusion, PublishedFusion)
    with torch.no_grad():
        logits = loaded(input_ids=prompt, images=images).logits  # [1, T, V]
    # the loaded model has LoRA merged into its weights: each weight rounded once, well inside the
    # budget `model_tolerance` gives each contraction for another summation order
    assert (logits - at_end.logits).abs().max() <= model_tolerance(loaded, at_end.logits, logits.shape[1])


@pytest.mark.slow
def test_zero3_two_processes_match_one_process(run_flags, tiny_checkpoints, tmp_path):
    """Every fusion parameter partitions under ZeRO-3 (a 0-dim one could not) and is gathered
    when its module runs: 2 ranks x micro-batch 1 train as 1 process x batch 2 (no dropout), up to
    the rounding of other summation orders (Adam's epsilon at 1: see `tests.train.test_deepspeed`)."""
    common = [
        "--model_type", "fusion_llama", "--fusion_variant", "published", "--fusion_lr", "4e-3",
        "--lora_dropout", "0", "--max_steps", "4", "--save_steps", "4",
        "--adam_epsilon", str(EPSILON), "--max_grad_norm", str(MAX_GRAD_NORM),
    ]  # fmt: skip
    reference = tmp_path / "single"
    logged = CaptureSteps()
    ref_summary, _ = run_training(run_flags(reference, *common), callbacks=[logged])
    out = tmp_path / "zero3"
    argv = run_flags(out, *common, "--deepspeed", str(REPO / "scripts" / "zero3.json"))
    argv[argv.index("--per_device_train_batch_size") + 1] = "1"
    _torchrun(argv, tmp_path)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["partitioned_parameters"] > 0
    llm, vision = (AutoConfig.from_pretrained(path) for path in tiny_checkpoints)
    tokens = 2 * int(argv[argv.index("--model_max_length") + 1])  # a micro-batch's, summed over
    width, depth = tolerances.network(llm, vision, tokens=tokens)
    depth += 1  # the published layer's visual norm, a mean of squares (as `model_tolerance` counts)
    ref_state = trained_state(reference)
    trained = sum(v.numel() for v in ref_state.values())
    clipped = [(lr, min(norm, MAX_GRAD_NORM)) for lr, norm in logged.steps]  # what Adam receives
    assert len(summary["losses"]) == len(ref_summary["losses"]) == len(logged.steps) == 4
    for step, (a, b) in enumerate(zip(ref_summary["losses"], summary["losses"], strict=True)):
        # the forward pass's own rounding, plus the earlier steps' weight drift (|gradient|_1 x drift)
        drift = tolerances.adam_weights(clipped[:step], width, depth, EPSILON, MAX_GRAD_NORM)
        assert (
            abs(a - b) <= tolerances.forward(width, depth, a) + trained**0.5 * logged.steps[step][1] * drift
        )
    weights = tolerances.adam_weights(clipped, width, depth, EPSILON, MAX_GRAD_NORM)
    assert max_abs_diff(trained_state(out), ref_state) <= weights
