"""The paper's release's LoRA output folders, written as its training writes them, load into the
matching release variant with the writer's logits; what does not fit is an error naming the file."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, LlamaForCausalLM

from llava.constants import IMAGE_TOKEN_INDEX
from llava.inference.engine import LoadedModel
from llava.model import FusionLlamaForCausalLM
from llava.model.builder import build_from_backbones, load_pretrained_model
from tests.model.model_helpers import randomize_parameters

PEFT = "base_model.model."
LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _release_model(llm, vision, variant):
    """The model the release trained: its fusion layer in layer 0, non-trivial tensors."""
    model, _ = build_from_backbones(
        "fusion_llama", llm, vision, fusion_variant=variant, mm_vision_select_layer=[-1]
    )
    randomize_parameters(model, (".fusion.",), std=0.3, seed=7)
    return model.eval()


def _lora_adapter(llm, folder):
    """LoRA on the base LLM's layers 1-3, as the release adds it (before any tower exists)."""
    base = LlamaForCausalLM.from_pretrained(llm)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_MODULES, layers_to_transform=[1, 2, 3])
    peft_model = get_peft_model(base, config)
    randomize_parameters(peft_model, ("lora_",), std=0.1, seed=11)
    peft_model.save_pretrained(folder)
    deltas = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            delta = (
                module.lora_B["default"].weight @ module.lora_A["default"].weight * module.scaling["default"]
            )
            deltas[name.removeprefix(PEFT) + ".weight"] = delta.detach()
    return deltas


def write_release_folder(folder, llm, vision, variant, **config_overrides):
    """A release LoRA output folder; returns the model whose logits it should reproduce."""
    folder.mkdir(parents=True)
    model = _release_model(llm, vision, variant)
    deltas = _lora_adapter(llm, folder)
    fusion = {}
    for name, param in model.named_parameters():
        if ".fusion.branches." in name:  # model.layers.0.self_attn.fusion.branches.q.up_A
            prefix, rest = name.split(".fusion.branches.")
            target, tensor_name = rest.split(".", 1)
            fusion[f"{PEFT}{prefix}.{target}_proj.{tensor_name}"] = param.detach().clone()
    torch.save(fusion, folder / "non_lora_trainables.bin")
    attn = model.model.layers[0].self_attn
    copies = {
        f"{PEFT}model.layers.0.self_attn.{t}_proj.original_weight": getattr(attn, f"{t}_proj")
        .weight.detach()
        .clone()
        for t in "qkv"
    }
    copies[f"{PEFT}model.layers.0.self_attn.o_proj.weight"] = attn.o_proj.weight.detach().clone()
    torch.save({**fusion, **copies}, folder / "non_lora_trainables_skip_layer.bin")
    config = AutoConfig.from_pretrained(llm).to_dict()
    for key in ("transformers_version", "dtype"):
        config.pop(key, None)
    release_fields = dict(
        model_type="fusion_llama", architectures=["LlamaForCausalLM"], use_vision_fusion=True, fusion_alpha=8.0,
        fusion_dropout=0.1, fusion_targets="q,k,v", mm_hidden_size=32, fusion_hidden_dim=128,
        layer_ids_to_inject="0", stable_fusion=False, use_mm_proj=False, image_token_id=IMAGE_TOKEN_INDEX,
        mm_vision_tower=vision, mm_vision_select_layer="-1", mm_vision_select_feature="patch",
        image_aspect_ratio="pad", mm_projector_type="mlp2x_gelu", mm_use_im_start_end=False,
        mm_use_im_patch_token=False, tune_mm_mlp_adapter=False, freeze_mm_mlp_adapter=False,
        mm_projector_lr=2e-5, tokenizer_padding_side="right", tokenizer_model_max_length=2048,
        mm_patch_merge_type="flat", use_cache=False,
    )  # fmt: skip
    config.update(release_fields, **config_overrides)
    (folder / "config.json").write_text(json.dumps(config))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            params[name].add_(delta)
    return model


def _logits(model, images):
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
    with torch.no_grad():
        return model(input_ids=ids, images=images[:1]).logits


@pytest.mark.parametrize("variant", ["release_mlp", "release_stable"])
def test_release_folder_loads_into_its_variant_with_the_writers_logits(
    variant, tiny_checkpoints, tmp_path, images
):
    llm, vision = tiny_checkpoints
    writer = write_release_folder(tmp_path / "run", llm, vision, variant)
    tokenizer, model, processor, _ = load_pretrained_model(
        str(tmp_path / "run"), llm, "inverse-llava-v1.5-7b-lora", device="cpu"
    )
    assert isinstance(model, FusionLlamaForCausalLM)
    assert model.config.fusion_variant == variant and model.config.fusion_layer_ids == [0]
    assert model.config.fusion_dropout == 0.0 and model.config.mm_vision_select_layer == [-1]
    # The loader merges B A x scaling into W as the writer did (PEFT's order) and loads the fusion
    # tensors unchanged: the same operations on the same values, so the same bits.
    assert torch.equal(_logits(model, images), _logits(writer, images))
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
    greedy = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    assert torch.equal(
        model.generate(ids, images=images[:1], **greedy), writer.generate(ids, images=images[:1], **greedy)
    )
    assert processor is not None
    runner_model = LoadedModel.load(str(tmp_path / "run"), llm, device="cpu").model  # the eval runners' path
    assert torch.equal(_logits(runner_model, images), _logits(writer, images))


def _load_refused(tiny_checkpoints, tmp_path, match: str, error: type[Exception] = ValueError) -> None:
    """Loading `tmp_path/run` onto the tiny LLM fails with `match`."""
    with pytest.raises(error, match=match):
        load_pretrained_model(str(tmp_path / "run"), tiny_checkpoints[0], device="cpu")


def _release_state(tmp_path, tiny_checkpoints, file_name: str = "non_lora_trainables.bin"):
    """A `release_mlp` folder under `tmp_path/run`, its `file_name` and that file's tensors."""
    llm, vision = tiny_checkpoints
    write_release_folder(tmp_path / "run", llm, vision, "release_mlp")
    file = tmp_path / "run" / file_name
    return file, torch.load(file, weights_only=True)


def test_unknown_fusion_tensors_are_named(tiny_checkpoints, tmp_path):
    file, state = _release_state(tmp_path, tiny_checkpoints)
    state[f"{PEFT}model.layers.0.self_attn.q_proj.vision_gate"] = torch.zeros(4)
    torch.save(state, file)
    _load_refused(
        tiny_checkpoints, tmp_path, r"non_lora_trainables.bin: 1 tensor\(s\) belong to neither .*vision_gate"
    )


def test_mixed_layers_and_missing_tensors_are_named(tiny_checkpoints, tmp_path):
    file, state = _release_state(tmp_path, tiny_checkpoints)
    state[f"{PEFT}model.layers.0.self_attn.q_proj.up_A"] = torch.zeros(64, 32)
    torch.save(state, file)
    _load_refused(tiny_checkpoints, tmp_path, "mix the release's two fusion layers")
    del state[f"{PEFT}model.layers.0.self_attn.q_proj.up_A"]
    del state[f"{PEFT}model.layers.0.self_attn.k_proj.projection_2.bias"]
    torch.save(state, file)
    _load_refused(
        tiny_checkpoints,
        tmp_path,
        r"the release_mlp layer lacks \[.projection_2.bias.\] in layer 0, target k",
    )


def test_a_config_that_disagrees_with_the_tensors_is_named(tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints
    write_release_folder(tmp_path / "run", llm, vision, "release_stable", layer_ids_to_inject="0,2")
    _load_refused(
        tiny_checkpoints,
        tmp_path,
        r"config.json: layer_ids_to_inject \[0, 2\] but the fusion tensors are in layers \[0\]",
    )


def test_another_base_is_refused(tiny_checkpoints, tmp_path):
    file, state = _release_state(tmp_path, tiny_checkpoints, "non_lora_trainables_skip_layer.bin")
    state[f"{PEFT}model.layers.0.self_attn.v_proj.original_weight"] += 1.0
    torch.save(state, file)
    _load_refused(
        tiny_checkpoints,
        tmp_path,
        r"v_proj.weight differs from the base model's; was it trained on another base",
    )


def test_an_unsafe_pickle_is_refused(tiny_checkpoints, tmp_path):
    file, _ = _release_state(tmp_path, tiny_checkpoints)
    torch.save({"x": torch.nn.Linear(2, 2)}, file)
    _load_refused(tiny_checkpoints, tmp_path, "non_lora_trainables.bin", error=Exception)
