"""The release's command lines train the release's layers: its scripts' flags resolve to them
(with one warning per flag that has no effect there), and a tiny run with those flags trains,
saves and loads back."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaForCausalLM
from llava.model.builder import load_pretrained_model
from llava.train.arguments import parse_arguments, resolve_run
from tests.train.train_helpers import run_training

NO_EFFECT = (
    "pretrain_mm_mlp_adapter",
    "mm_projector_type",
    "mm_projector_lr",
    "fusion_hidden_dim",
    "fusion_dropout",
)
# The release script's fusion flags at the tiny tower's sizes (3 layers, width 32).
RELEASE_FLAGS = (
    "--model_type fusion_llama --use_vision_fusion True --use_mm_proj False --mm_vision_select_layer=-2 "
    "--pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin --mm_projector_type mlp2x_gelu "
    "--mm_projector_lr 2e-5 --fusion_alpha 1.0 --fusion_hidden_dim 128 --fusion_dropout 0.1 --fusion_targets q,k,v "
    "--lora_layer_ids_to_skip 0,2 --layer_ids_to_inject 0,2 --save_only False"
).split()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("script", "select_layer", "width"),
    [("fusion_finetune_lora.sh", [-2], 1024), ("fusion_finetune_lora_HD.sh", [-1, -2], 2048)],
)
def test_release_scripts_resolve_to_its_default_layer(
    script, select_layer, width, script_argv, tmp_path, caplog
):
    argv = script_argv("release", script, tmp_path)
    with caplog.at_level(logging.WARNING, logger="llava.train.arguments"):
        spec = resolve_run(*parse_arguments([*argv, "--deepspeed", "", "--bf16", "False", "--tf32", "False",
                                             "--output_dir", str(tmp_path / "out")]))  # fmt: skip
    assert spec.model_type == "fusion_llama"
    assert spec.config_fields == {
        "fusion_variant": "release_mlp", "fusion_layer_ids": [0, 2], "fusion_targets": ["q", "k", "v"],
        "fusion_alpha": 1.0, "mm_vision_select_layer": select_layer, "mm_hidden_size": width,
        "image_aspect_ratio": "pad",
    }  # fmt: skip
    assert spec.lora == {"lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05, "skip_layers": [0, 2]}
    warned = _warnings(caplog)
    for flag in (*NO_EFFECT, "save_only"):
        assert sum(f"--{flag} " in message for message in warned) == 1, (flag, warned)
    assert len(warned) == len(NO_EFFECT) + 1


def test_stable_fusion_chooses_the_release_layer_and_clashes_with_fusion_variant(run_flags, tmp_path):
    def resolve(*flags):
        return resolve_run(*parse_arguments(run_flags(tmp_path, "--model_type", "fusion_llama", *flags)))

    assert resolve("--stable_fusion", "True").config_fields["fusion_variant"] == "release_stable"
    assert resolve("--stable_fusion", "False").config_fields["fusion_variant"] == "release_mlp"
    assert resolve("--fusion_variant", "release_stable").config_fields["fusion_variant"] == "release_stable"
    assert "fusion_variant" not in resolve().config_fields  # the config's default: the paper's concat
    with pytest.raises(ValueError, match="--stable_fusion False and --fusion_variant concat both choose"):
        resolve("--stable_fusion", "False", "--fusion_variant", "concat")
    with pytest.raises(ValueError, match="--fusion_dropout .* do not apply|--fusion_dropout does not apply"):
        resolve_run(
            *parse_arguments(run_flags(tmp_path, "--model_type", "llava_llama", "--fusion_dropout", "0.1"))
        )
    with pytest.raises(ValueError, match="--mm_projector_type does not apply"):
        resolve("--mm_projector_type", "mlp2x_gelu")  # on the project's own layers: still an error


@pytest.mark.parametrize(("stable", "variant"), [("False", "release_mlp"), ("True", "release_stable")])
def test_release_flags_train_save_and_load_back(stable, variant, run_flags, tiny_checkpoints, tmp_path):
    out = tmp_path / variant
    argv = run_flags(
        out, *RELEASE_FLAGS, "--stable_fusion", stable, "--max_steps", "16", "--save_steps", "16"
    )
    summary, weights = run_training(argv)
    losses = summary["losses"]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses
    saved = load_file(out / "non_lora_trainables.safetensors")
    names = {"release_mlp": ["alpha", "projection_1.weight", "projection_1.bias", "projection_2.weight",
                             "projection_2.bias"],
             "release_stable": ["alpha", "up_A", "text_down", "vision_down", "vision_norm.weight"]}[variant]  # fmt: skip
    assert set(saved) == {
        f"model.layers.{layer}.self_attn.fusion.branches.{t}.{name}"
        for layer in (0, 2)
        for t in "qkv"
        for name in names
    }
    for key, tensor in saved.items():
        assert torch.equal(tensor, weights[key]), key

    _, model, _, _ = load_pretrained_model(str(out), tiny_checkpoints[0], device="cpu")
    assert isinstance(model, FusionLlamaForCausalLM) and model.config.fusion_variant == variant
    assert model.config.fusion_dropout == 0.0 and model.config.fusion_hidden_dim is None
    params = dict(model.named_parameters())
    for key, tensor in saved.items():
        assert torch.equal(params[key], tensor), key
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42]])
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    answer = model.generate(ids, images=images, max_new_tokens=4, do_sample=False, pad_token_id=3)
    assert answer.shape[0] == 1 and 1 <= answer.shape[1] <= 4
