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
from transformers import TrainerCallback

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.published_fusion import PublishedFusion
from tests.model.test_published_fusion import BUNDLE_NAMES, model_tolerance
from tests.train.test_deepspeed import _torchrun
from tests.train.train_helpers import REPO, initial_weights, max_abs_diff, run_training, trained_state


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
def test_zero3_two_processes_match_one_process(run_flags, tmp_path):
    """Every fusion parameter partitions under ZeRO-3 (a 0-dim one could not) and is gathered
    when its module runs: 2 ranks x micro-batch 1 train as 1 process x batch 2 (no dropout)."""
    common = [
        "--model_type", "fusion_llama", "--fusion_variant", "published", "--fusion_lr", "4e-3",
        "--lora_dropout", "0", "--max_steps", "4", "--save_steps", "4",
    ]  # fmt: skip
    reference = tmp_path / "single"
    ref_summary, _ = run_training(run_flags(reference, *common))
    out = tmp_path / "zero3"
    argv = run_flags(out, *common, "--deepspeed", str(REPO / "scripts" / "zero3.json"))
    argv[argv.index("--per_device_train_batch_size") + 1] = "1"
    _torchrun(argv, tmp_path)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["partitioned_parameters"] > 0
    assert summary["losses"] == pytest.approx(ref_summary["losses"], abs=1e-4)
    assert max_abs_diff(trained_state(out), trained_state(reference)) < 1e-4
