"""The recipes for other LLM families and towers resolve to the intended runs (through a stand-in
`deepspeed` launcher that records its arguments)."""

from __future__ import annotations

import pytest

from llava.train.arguments import parse_arguments, resolve_run


@pytest.mark.parametrize(
    ("script", "model_type", "llm", "tower", "version", "fields"),
    [
        (
            "fusion_finetune_lora_llama3_siglip.sh",
            "fusion_llama",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "google/siglip-so400m-patch14-384",
            "llama_3",
            {"mm_vision_select_layer": [-1], "fusion_layer_ids": [0]},
        ),
        (
            "finetune_lora_llama3_siglip.sh",
            "llava_llama",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "google/siglip-so400m-patch14-384",
            "llama_3",
            {"mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": [-2]},
        ),
        (
            "fusion_finetune_lora_qwen25_clip.sh",
            "fusion_llama",
            "Qwen/Qwen2.5-7B-Instruct",
            "openai/clip-vit-large-patch14-336",
            "qwen_2",
            {"mm_vision_select_layer": [-1]},
        ),
        (
            "finetune_lora_qwen25_clip.sh",
            "llava_llama",
            "Qwen/Qwen2.5-7B-Instruct",
            "openai/clip-vit-large-patch14-336",
            "qwen_2",
            {"mm_projector_type": "mlp2x_gelu"},
        ),
    ],
)
def test_family_recipes_resolve(script, model_type, llm, tower, version, fields, script_argv, tmp_path):
    argv = script_argv("v1_5", script, tmp_path)
    model_args, data_args, training_args = parse_arguments(
        [*argv, "--deepspeed", "", "--bf16", "False", "--tf32", "False", "--output_dir", str(tmp_path)]
    )
    spec = resolve_run(model_args, data_args, training_args)
    assert spec.model_type == model_type and model_args.version == version
    assert (model_args.model_name_or_path, model_args.vision_tower) == (llm, tower)
    assert fields.items() <= spec.config_fields.items()
    assert spec.lora["lora_r"] == 128
    if model_type == "llava_llama":
        stage1 = {"llama_3": "llava-llama3-8b-siglip-pretrain", "qwen_2": "llava-qwen2.5-7b-clip-pretrain"}
        assert (
            model_args.pretrain_mm_mlp_adapter == f"./checkpoints/{stage1[version]}/mm_projector.safetensors"
        )
