"""Flags parsed once at the edge (honoured or rejected), the recipe's choices, parameter groups,
and fusion gradients under activation checkpointing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import transformers

from llava.model.builder import build_from_backbones
from llava.train import train
from llava.train.arguments import (
    DataArguments,
    FlagError,
    ModelArguments,
    TrainingArguments,
    parse_arguments,
    resolve_run,
)
from llava.train.recipe import apply_recipe, parameter_groups

REQUIRED = [
    "--model_name_or_path",
    "llm",
    "--vision_tower",
    "clip",
    "--data_path",
    "d.json",
    "--output_dir",
    "out",
]


def resolve(*flags: str):
    return resolve_run(*parse_arguments([*REQUIRED, "--report_to", "none", *flags]))


def test_release_flags_become_typed_config_fields():
    spec = resolve(
        "--use_vision_fusion", "True", "--mm_vision_select_layer", "-1,-2", "--mm_hidden_size", "2048",
        "--fusion_targets", "q,v", "--layer_ids_to_inject", "0,2", "--vision_stream_norm", "True",
        "--fusion_variant", "gated", "--fusion_alpha", "0.5", "--fusion_dropout", "0.0",
        "--lora_enable", "True", "--lora_r", "128", "--lora_alpha", "256",
    )  # fmt: skip
    assert spec.model_type == "fusion_llama"
    assert spec.config_fields == {
        "mm_vision_select_layer": [-1, -2], "mm_hidden_size": 2048, "fusion_targets": ["q", "v"],
        "fusion_layer_ids": [0, 2], "vision_stream_norm": True, "fusion_variant": "gated",
        "fusion_alpha": 0.5, "fusion_dropout": 0.0,
    }  # fmt: skip
    assert spec.lora == {"lora_r": 128, "lora_alpha": 256, "lora_dropout": 0.05, "skip_layers": [0, 2]}


def test_baseline_defaults():
    spec = resolve("--lora_enable", "True", "--mm_projector_type", "mlp2x_gelu")
    assert spec.model_type == "llava_llama" and spec.lora["skip_layers"] == []
    assert spec.config_fields == {"mm_projector_type": "mlp2x_gelu"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model_type", "llava_llama", "--fusion_alpha", "1.0"], "--fusion_alpha does not apply"),
        (
            ["--model_type", "llava_llama", "--layer_ids_to_inject", "0"],
            "--layer_ids_to_inject does not apply",
        ),
        (["--model_type", "llava_llama", "--fusion_lr", "1e-4"], "--fusion_lr does not apply"),
        (["--model_type", "llava_llama", "--compile_fusion", "True"], "--compile_fusion does not apply"),
        (
            ["--use_vision_fusion", "True", "--mm_projector_type", "linear"],
            "--mm_projector_type does not apply",
        ),
        (["--use_vision_fusion", "True", "--mm_projector_lr", "2e-5"], "--mm_projector_lr does not apply"),
        (["--use_vision_fusion", "True", "--tune_mm_mlp_adapter", "True"], "no projector to pre-train"),
        (["--use_vision_fusion", "True", "--model_type", "llava_llama"], "disagree"),
        (["--use_vision_fusion", "True", "--use_mm_proj", "True"], "disagree"),
        (["--lora_r", "8"], "--lora_r does not apply: LoRA is off"),
        (["--lora_layer_ids_to_skip", "0"], "LoRA is off"),
        (["--loraplus_lr_ratio", "16"], "--loraplus_lr_ratio does not apply: LoRA is off"),
        (["--lora_enable", "True", "--loraplus_lr_ratio", "0"], "expected a positive multiple"),
        (["--tune_mm_mlp_adapter", "True", "--lora_enable", "True"], "stage 1 trains the projector only"),
        (["--layer_ids_to_inject", "0,x", "--use_vision_fusion", "True"], "cannot read int"),
        (["--version", "v0"], "unknown template"),
        (["--lazy_preprocess", "False"], "not supported"),
        (["--mm_use_im_start_end", "True"], "not supported"),
    ],
)
def test_inapplicable_flags_are_rejected(flags, message):
    with pytest.raises(ValueError, match=message):
        resolve(*flags)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lora_alpha", "0"], r"--lora_alpha 0: expected a positive number"),
        (["--lora_alpha", "-16"], r"--lora_alpha -16: expected a positive number"),
        (["--lora_r", "0"], r"--lora_r 0: expected a rank of at least 1"),
        (["--lora_dropout", "1.0"], r"--lora_dropout 1.0: expected a probability in \[0, 1\)"),
        (["--lora_dropout", "-0.1"], r"--lora_dropout -0.1: expected a probability"),
        (["--fusion_lr=-1e-4"], r"--fusion_lr -0.0001: expected a finite rate >= 0"),
        (["--mm_projector_lr", "nan"], r"--mm_projector_lr nan: expected a finite rate"),
        (["--learning_rate", "inf"], r"--learning_rate inf: expected a finite rate"),
        (["--model_max_length", "0"], r"--model_max_length 0: expected at least 1 position"),
        (["--save_on_each_node", "True"], r"--save_on_each_node True is not supported: .* one process"),
    ],
)
def test_out_of_range_numeric_flags_are_rejected_naming_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        resolve("--lora_enable", "True", *flags)


def test_compile_fusion_is_refused_under_zero3():
    """ZeRO-3's hooks gather a module's parameters inside the call `--compile_fusion` compiles."""
    zero3 = str(Path(__file__).resolve().parents[2] / "scripts" / "zero3.json")
    flags = [*REQUIRED, "--report_to", "none", "--model_type", "fusion_llama", "--compile_fusion", "True"]
    _, _, training_args = parse_arguments([*flags, "--deepspeed", zero3])
    with pytest.raises(FlagError, match="--compile_fusion True does not apply under DeepSpeed ZeRO-3"):
        train._compile_fusion(None, training_args)


def test_unknown_flags_and_fusion_hidden_dim_for_concat_are_errors(tiny_checkpoints):
    with pytest.raises(ValueError, match="not used by the HfArgumentParser"):
        resolve("--no_such_flag", "1")
    spec = resolve("--use_vision_fusion", "True", "--fusion_hidden_dim", "128")  # valid flag, wrong variant
    with pytest.raises(ValueError, match="only applies to the 'mlp' fusion variant"):
        build_from_backbones(spec.model_type, *tiny_checkpoints, **spec.config_fields)


def test_warmup_ratio_is_llavas_spelling_of_fractional_warmup_steps():
    _, _, training_args = parse_arguments([*REQUIRED, "--report_to", "none", "--warmup_ratio", "0.03"])
    assert training_args.warmup_steps == 0.03


# LLaVA-1.5's own scripts/v1_5/finetune_lora.sh, flag for flag (its --evaluation_strategy is
# transformers' old name of --eval_strategy).
LLAVA_FINETUNE_LORA = """
    --lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 --deepspeed ./scripts/zero3.json
    --model_name_or_path lmsys/vicuna-13b-v1.5 --version v1 --data_path ./playground/data/llava_v1_5_mix665k.json
    --image_folder ./playground/data --vision_tower openai/clip-vit-large-patch14-336
    --pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-13b-pretrain/mm_projector.bin --mm_projector_type mlp2x_gelu
    --mm_vision_select_layer -2 --mm_use_im_start_end False --mm_use_im_patch_token False --image_aspect_ratio pad
    --group_by_modality_length True --bf16 True --output_dir ./checkpoints/llava-v1.5-13b-lora --num_train_epochs 1
    --per_device_train_batch_size 16 --per_device_eval_batch_size 4 --gradient_accumulation_steps 1
    --evaluation_strategy no --save_strategy steps --save_steps 50000 --save_total_limit 1 --learning_rate 2e-4
    --weight_decay 0. --warmup_ratio 0.03 --lr_scheduler_type cosine --logging_steps 1 --tf32 True
    --model_max_length 2048 --gradient_checkpointing True --dataloader_num_workers 4 --lazy_preprocess True
    --report_to wandb
""".split()


def test_llavas_finetune_lora_flags_parse_as_its_script_passes_them():
    # Only what needs a CUDA machine is switched off (a later flag wins).
    argv = [*LLAVA_FINETUNE_LORA, "--deepspeed", "", "--bf16", "False", "--tf32", "False",
            "--report_to", "none"]  # fmt: skip
    model_args, data_args, training_args = parse_arguments(argv)
    spec = resolve_run(model_args, data_args, training_args)
    assert spec.model_type == "llava_llama" and spec.lora["lora_r"] == 128
    assert training_args.eval_strategy == "no" and training_args.activation_checkpointing


def test_evaluation_strategy_is_the_old_spelling_of_eval_strategy():
    _, _, training_args = parse_arguments([*REQUIRED, "--evaluation_strategy", "steps", "--eval_steps", "5"])
    assert training_args.eval_strategy == "steps" and training_args.eval_steps == 5
    with pytest.raises(ValueError, match="give --evaluation_strategy .* or --eval_strategy, not both"):
        parse_arguments([*REQUIRED, "--evaluation_strategy", "steps", "--eval_strategy", "epoch"])


def _help_entries(capsys, monkeypatch) -> dict[str, str]:
    """{flag: its help text, on one line} from the training entry point's --help."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    entries = re.split(r"\n  (?=--)", capsys.readouterr().out.split("options:", 1)[1])
    return {entry.split()[0]: " ".join(entry.split()[1:]) for entry in entries if entry.startswith("--")}


def test_help_shows_each_default_once_and_never_an_unused_none(capsys, monkeypatch):
    entries = _help_entries(capsys, monkeypatch)
    assert entries["--image_aspect_ratio"].endswith("pad, resize or square. (default: pad)")
    assert entries["--lora_alpha"].endswith("LoRA alpha. (default: 16)")
    inherited = {field.name for field in dataclasses.fields(transformers.TrainingArguments)}
    own = [
        field.name
        for cls in (ModelArguments, DataArguments, TrainingArguments)
        for field in dataclasses.fields(cls)
    ]
    twice = [name for name in own if name not in inherited and entries[f"--{name}"].count("default") > 1]
    assert not twice, twice
    assert not [flag for flag, text in entries.items() if "(default: None)" in text]


def _fusion_model(tiny_checkpoints, **fields):
    model, _ = build_from_backbones("fusion_llama", *tiny_checkpoints, **fields)
    return model


def test_recipe_lora_skips_fusion_layers_and_the_vision_tower(tiny_checkpoints):
    spec = resolve("--use_vision_fusion", "True", "--layer_ids_to_inject", "0,2", "--lora_enable", "True",
                   "--fusion_lr", "1e-3")  # fmt: skip
    model, plan = apply_recipe(_fusion_model(tiny_checkpoints, fusion_layer_ids=[0, 2]), spec)
    assert {t.split(".")[2] for t in plan.lora_targets} == {"1", "3"}
    assert all(t.startswith("model.layers.") for t in plan.lora_targets)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for names in plan.groups.values() for n in names}
    assert not [n for n in trained if "vision_tower" in n or "embed_tokens" in n or "lm_head" in n]
    assert len(plan.groups["fusion"]) == 8 and all(".fusion." in n for n in plan.groups["fusion"])
    assert all("lora_" in n for n in plan.groups["lora"])

    groups = parameter_groups(model, plan, learning_rate=2e-4, weight_decay=0.1, fusion_lr=1e-3)
    rates = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert rates == {"lora": (2e-4, 0.1), "fusion": (1e-3, 0.1), "fusion_no_decay": (1e-3, 0.0)}

    plus = parameter_groups(model, plan, learning_rate=2e-4, weight_decay=0.1, lora_b_lr_ratio=16)
    by_name = {g["name"]: g for g in plus}
    assert {n: g["lr"] for n, g in by_name.items()} == {
        "lora": 2e-4, "lora_B": 16 * 2e-4, "fusion": 2e-4, "fusion_no_decay": 2e-4,
    }  # fmt: skip
    names = {id(p): n for n, p in model.named_parameters()}
    a_names = [names[id(p)] for p in by_name["lora"]["params"]]
    b_names = [names[id(p)] for p in by_name["lora_B"]["params"]]
    assert all(".lora_A." in n for n in a_names) and all(".lora_B." in n for n in b_names)
    assert sorted(a_names + b_names) == sorted(plan.groups["lora"]) and len(a_names) == len(b_names)


def test_lora_with_every_layer_skipped_is_a_clear_error(tiny_checkpoints):
    spec = resolve("--use_vision_fusion", "True", "--layer_ids_to_inject", "0,1,2,3", "--lora_enable", "True")
    model = _fusion_model(tiny_checkpoints, fusion_layer_ids=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"--lora_layer_ids_to_skip \[0, 1, 2, 3\] skips every layer"):
        apply_recipe(model, spec)


def test_recipe_stage1_trains_only_the_projector(tiny_checkpoints):
    spec = resolve("--tune_mm_mlp_adapter", "True")
    model, _ = build_from_backbones("llava_llama", *tiny_checkpoints)
    model, plan = apply_recipe(model, spec)
    assert plan.groups == {"projector": [n for n, _ in model.named_parameters() if "mm_projector" in n]}


def test_fusion_parameters_get_gradients_under_activation_checkpointing(tiny_checkpoints):
    spec = resolve("--use_vision_fusion", "True", "--lora_enable", "True", "--fusion_dropout", "0.0")
    model, plan = apply_recipe(_fusion_model(tiny_checkpoints, fusion_dropout=0.0), spec)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    fusion = model.get_base_model().model.layers[0].self_attn.fusion
    with torch.no_grad():
        fusion.text_proj.normal_(0.0, 0.1)  # a zero W_concat would cut the gradient of W_t2v
    input_ids = torch.tensor([[1, 20, -200, 30, 40, 50]])
    loss = model(input_ids=input_ids, labels=input_ids.clamp(min=0), images=torch.randn(1, 3, 32, 32)).loss
    loss.backward()
    for name in ("text_to_vision", "text_proj", "vision_proj", "alpha"):
        grad = getattr(fusion, name).grad
        assert grad is not None and grad.abs().max() > 0, name
