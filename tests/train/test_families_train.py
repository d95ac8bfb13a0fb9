"""Training both models on every LLM family with CLIP and with SigLIP (and Qwen2 with SigLIP 2
NaFlex) through the training entry point (full fine-tuning of the LLM and the fusion branch /
projector, two epochs of the toy data set): the run finishes and the loss falls. A LoRA run of
another family loads on its base; the other LoRA runs are on the Llama family, in
test_train_runs.py (LoRA finds its target modules by type, the same for every family)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from llava.model.builder import load_pretrained_model
from tests.train.train_helpers import SUBPROCESS_ENV, run_training

# tiny LLM -> the conversation template of its family
TEMPLATES = {
    "llama": "v1",
    "llama3": "llama_3",
    "mistral": "mistral_instruct",
    "qwen2": "qwen_2",
    "qwen3": "qwen_2",
    "gemma": "v1",
}
METHOD_FLAGS = {
    "fusion_llama": ["--model_type", "fusion_llama"],
    "llava_llama": ["--model_type", "llava_llama"],
}
EPOCH = 6  # steps: 24 toy records, batches of 4
STEPS = 2 * EPOCH
MATRIX = [(llm, tower) for llm in TEMPLATES for tower in ("clip", "siglip")] + [("qwen2", "siglip2")]


def _flags(
    run_flags, backbones, data, output_dir, version: str, method: str, steps: int = STEPS
) -> list[str]:
    """A short full fine-tuning run of `method` on `backbones`."""
    settings = {
        "per_device_train_batch_size": "4",
        "learning_rate": "2e-3",
        "lr_scheduler_type": "constant",
        "warmup_ratio": None,
        "model_max_length": "256",
        "max_steps": str(steps),
        "save_strategy": "no",
    }
    return run_flags(
        output_dir,
        *METHOD_FLAGS[method],
        data=data,
        lora=False,
        version=version,
        backbones=backbones,
        **settings,
    )


def _loss_falls(losses: list[float]) -> None:
    """The second epoch's mean loss is well below the first's (each epoch sees every record)."""
    assert len(losses) == STEPS
    assert sum(losses[-EPOCH:]) / EPOCH < sum(losses[:EPOCH]) / EPOCH - 0.5, [round(x, 2) for x in losses]


@pytest.mark.parametrize("llm, tower", MATRIX)
@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_training_runs_and_the_loss_falls(
    run_flags, tiny_backbones, toy_dataset, tmp_path, llm, tower, method
):
    summary, weights = run_training(
        _flags(run_flags, tiny_backbones(llm, tower), toy_dataset, tmp_path, TEMPLATES[llm], method)
    )
    _loss_falls(summary["losses"])
    new = "fusion" if method == "fusion_llama" else "projector"
    assert set(summary["trained_groups"]) == {"llm", new} and summary["skipped_samples"] == 0
    assert summary["newly_initialised"] and all(
        (".fusion." in n) if new == "fusion" else ("mm_projector" in n) for n in summary["newly_initialised"]
    )


@pytest.mark.slow
def test_entry_point_trains_qwen2_with_siglip_and_its_chat_template(
    run_flags, tiny_backbones, toy_dataset, tmp_path
):
    """`python -m llava.train.train`, as a user runs it, with `--version chat_template`."""
    argv = _flags(
        run_flags, tiny_backbones("qwen2", "siglip"), toy_dataset, tmp_path, "chat_template", "fusion_llama"
    )
    subprocess.run(
        [sys.executable, "-m", "llava.train.train", *argv], env=SUBPROCESS_ENV, check=True, timeout=300
    )
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    _loss_falls(summary["losses"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert (
        config["model_type"] == "fusion_qwen2"
        and config["vision_config"]["model_type"] == "siglip_vision_model"
    )


def test_lora_run_of_another_family_loads_on_its_base(run_flags, tiny_backbones, toy_dataset, tmp_path):
    """A LoRA run on Qwen3 + SigLIP (adapter + non-LoRA trainables) loads on its plain base with
    the trained fusion branch and the LoRA merged, nothing left newly initialised."""
    backbones = tiny_backbones("qwen3", "siglip")
    argv = _flags(run_flags, backbones, toy_dataset, tmp_path, "qwen_2", "fusion_llama", steps=4)
    argv += ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--fusion_lr", "1e-2"]
    summary, weights = run_training(argv)
    assert set(summary["trained_groups"]) == {"lora", "fusion"}
    _, model, _, _ = load_pretrained_model(str(tmp_path), backbones[0], device="cpu")
    assert type(model).__name__ == "FusionQwen3ForCausalLM"
    params = dict(model.named_parameters())
    fusion = [name for name in weights if ".fusion." in name]
    assert fusion and all(torch.equal(params[name], weights[name]) for name in fusion)
    base = AutoModelForCausalLM.from_pretrained(backbones[0])
    merged = params["model.layers.1.self_attn.q_proj.weight"]
    assert not torch.equal(merged, base.state_dict()["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(
        params["model.layers.0.self_attn.q_proj.weight"],
        base.state_dict()["model.layers.0.self_attn.q_proj.weight"],
    )  # fusion layer: no LoRA
