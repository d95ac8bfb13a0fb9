"""The training scripts' flags parse and resolve to the intended runs (with a stand-in `deepspeed`
launcher that records its arguments instead of training)."""

from __future__ import annotations

import pytest

from llava.train.arguments import parse_arguments, resolve_run
from tests.train.train_helpers import REPO, TRAINING_SCRIPTS


@pytest.mark.parametrize(
    ("script", "model_type", "expected"),
    [
        (
            "fusion_finetune_lora.sh",
            "fusion_llama",
            {"fusion_layer_ids": [0], "mm_vision_select_layer": [-1]},
        ),
        (
            "fusion_finetune_lora_HD.sh",
            "fusion_llama",
            {"mm_vision_select_layer": [-1, -2]},
        ),
        (
            "fusion_finetune_lora_published.sh",
            "fusion_llama",
            {"fusion_variant": "published", "fusion_layer_ids": [0], "mm_vision_select_layer": [-1]},
        ),
        (
            "fusion_finetune_lora_published_HD.sh",
            "fusion_llama",
            {"fusion_variant": "published", "mm_vision_select_layer": [-2, -1]},
        ),
        ("ablation_fusion_add.sh", "fusion_llama", {"fusion_variant": "add"}),
        ("ablation_fusion_gated.sh", "fusion_llama", {"fusion_variant": "gated"}),
        ("ablation_multi_layer.sh", "fusion_llama", {"fusion_layer_ids": [0, 2]}),
        ("pretrain.sh", "llava_llama", {"mm_projector_type": "mlp2x_gelu"}),
        ("finetune_lora.sh", "llava_llama", {"mm_vision_select_layer": [-2]}),
        ("alignment_free_lora.sh", "llava_llama", {"mm_projector_type": "mlp2x_gelu"}),
    ],
)
def test_script_flags_resolve(script, model_type, expected, script_argv, tmp_path):
    argv = script_argv("v1_5", script, tmp_path)
    model_args, data_args, training_args = parse_arguments([*argv, "--deepspeed", "", "--bf16", "False",
                                                            "--tf32", "False", "--output_dir", str(tmp_path)])  # fmt: skip
    spec = resolve_run(model_args, data_args, training_args)
    assert spec.model_type == model_type
    assert expected.items() <= spec.config_fields.items()
    if script == "pretrain.sh":
        assert spec.projector_only and spec.lora is None and model_args.version == "plain"
    else:
        assert spec.lora["lora_r"] == 128 and spec.lora["lora_alpha"] == 256
    if model_type == "fusion_llama":
        assert spec.lora["skip_layers"] == spec.config_fields.get("fusion_layer_ids", [0])
        assert training_args.learning_rate == 2e-4 and training_args.warmup_steps == 0.03
    if script.startswith("fusion_finetune_lora_published"):  # the authors' published recipe
        assert spec.lora["lora_dropout"] == 0.05 and training_args.seed == 42
        assert training_args.per_device_train_batch_size * 8 == 128  # common.sh's 8 GPUs
    if script == "finetune_lora.sh":
        assert model_args.pretrain_mm_mlp_adapter.endswith("mm_projector.safetensors")
    if script == "alignment_free_lora.sh":
        assert model_args.pretrain_mm_mlp_adapter is None


# Flags that say the model a second time, or that the tower already determines.
REDUNDANT = {"--use_vision_fusion", "--use_mm_proj", "--mm_hidden_size"}
OWN_SCRIPTS = [script for folder, script in TRAINING_SCRIPTS if folder == "v1_5"]


@pytest.mark.parametrize("script", OWN_SCRIPTS)
def test_own_scripts_name_the_model_once_and_pass_no_derived_flag(script, script_argv, tmp_path):
    argv = script_argv("v1_5", script, tmp_path)
    assert argv.count("--model_type") == 1, argv
    assert not REDUNDANT & set(argv), f"scripts/v1_5/{script} passes {sorted(REDUNDANT & set(argv))}"


def test_own_scripts_share_their_common_flags_from_one_file():
    """The flags every recipe passes are written once, in scripts/v1_5/common.sh."""
    folder = REPO / "scripts" / "v1_5"
    for flag in ("--num_train_epochs", "--warmup_ratio", "--lr_scheduler_type", "--lora_r"):
        holders = [p.name for p in sorted(folder.glob("*.sh")) if flag in p.read_text()]
        assert holders == ["common.sh"], f"{flag} is written in {holders}"
