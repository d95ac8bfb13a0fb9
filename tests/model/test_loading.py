"""Save/load round trips through `from_pretrained` and `load_pretrained_model`, for every checkpoint kind."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaForCausalLM,
)

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaForCausalLM
from llava.model.builder import MM_PROJECTOR, NON_LORA_TRAINABLES, build_from_backbones, load_pretrained_model
from llava.model.placement import resolve_device
from llava.model.vision_tower import load_image_processor
from tests import tolerances

IDS = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42]])


def _logits(model, images):
    with torch.no_grad():
        return model(input_ids=IDS, images=images[:1]).logits


def assert_same_logits(got: torch.Tensor, expected: torch.Tensor, config) -> None:
    """`load_pretrained_model` runs SDPA, the built models eager attention: the same model's float32
    logits, summed in other orders."""
    assert (got - expected).abs().max().item() <= tolerances.model_forward(expected, config)


def _save_complete(model, folder, tiny_checkpoints):
    llm, vision = tiny_checkpoints
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(llm).save_pretrained(folder)
    load_image_processor(vision).save_pretrained(folder)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_complete_checkpoint_round_trip(build, images, tiny_checkpoints, tmp_path, model_type):
    model = build(model_type)
    _save_complete(model, tmp_path, tiny_checkpoints)
    assert not list(tmp_path.glob("*.bin"))
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(direct) is type(model)
    tokenizer, loaded, processor, context_len = load_pretrained_model(str(tmp_path), device="cpu")
    assert torch.equal(_logits(direct, images), _logits(model, images))
    assert_same_logits(_logits(loaded, images), _logits(model, images), model.config)
    assert processor.crop_size["height"] == 32 and context_len == 1024 and tokenizer.pad_token is not None


def test_plain_llama_into_fusion_reports_exactly_the_fusion_parameters(build, tiny_checkpoints):
    llm, _ = tiny_checkpoints
    config = build("fusion_llama", randomize=False, fusion_layer_ids=[0, 2]).config
    _, info = FusionLlamaForCausalLM.from_pretrained(llm, config=config, output_loading_info=True)
    fusion_names = {
        name for name, _ in FusionLlamaForCausalLM(config).named_parameters() if ".fusion." in name
    }
    assert set(info["missing_keys"]) == fusion_names
    assert len(fusion_names) == 8  # 2 layers x (alpha, W_t2v, A, B)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]


def test_checkpoint_without_tower_weights_takes_them_from_mm_vision_tower(
    build, images, tiny_checkpoints, tmp_path
):
    model = build("fusion_llama")
    _save_complete(model, tmp_path, tiny_checkpoints)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")}
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(tmp_path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), device="cpu")
    assert_same_logits(_logits(loaded, images), _logits(model, images), model.config)


@torch.no_grad()
def _perturb_lora(peft_model) -> None:
    """LoRA's B matrices start at zero; draw them so that the adapter changes the model."""
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.normal_(0, 0.1)


def _save_lora_run(model, folder, tiny_checkpoints):
    """A LoRA run's output folder as the training recipe writes it: adapter, the trained non-LoRA
    weights (fusion branch or projector), config, tokenizer, image processor. Returns the PEFT model."""
    llm, vision = tiny_checkpoints
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.layers\.[1-3]\.(self_attn|mlp)\.\w+_proj")
    peft_model = get_peft_model(model, lora)
    _perturb_lora(peft_model)
    peft_model.save_pretrained(folder)
    trainables = {
        k: v.clone() for k, v in model.state_dict().items() if ".fusion." in k or "mm_projector" in k
    }
    save_file(trainables, str(folder / NON_LORA_TRAINABLES))
    model.config.save_pretrained(folder)
    AutoTokenizer.from_pretrained(llm).save_pretrained(folder)
    load_image_processor(vision).save_pretrained(folder)
    return peft_model


def test_lora_checkpoint_plus_base_equals_merged_model(build, images, tiny_checkpoints, tmp_path, caplog):
    llm, _ = tiny_checkpoints
    peft_model = _save_lora_run(build("fusion_llama"), tmp_path, tiny_checkpoints)
    expected = _logits(peft_model.merge_and_unload(), images)

    with pytest.raises(ValueError, match="--model-base"):
        load_pretrained_model(str(tmp_path), device="cpu")
    with caplog.at_level(logging.INFO, logger="llava.model.builder"):
        _, loaded, _, _ = load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")
    assert isinstance(loaded, FusionLlamaForCausalLM)
    assert_same_logits(_logits(loaded, images), expected, loaded.config)
    # The base lacked the fusion branch; the report says where it came from and that nothing is left new.
    assert f"4 tensor(s) from {tmp_path / NON_LORA_TRAINABLES}; newly initialised: none" in caplog.text


@pytest.mark.parametrize(
    "model_type, trained", [("fusion_llama", "fusion branch"), ("llava_llama", "projector")]
)
def test_lora_folder_without_non_lora_trainables_is_an_error_naming_it(
    build, tiny_checkpoints, tmp_path, model_type, trained
):
    _save_lora_run(build(model_type), tmp_path, tiny_checkpoints)
    (tmp_path / NON_LORA_TRAINABLES).unlink()
    with pytest.raises(FileNotFoundError, match=f"{NON_LORA_TRAINABLES} is missing.*untrained {trained}"):
        load_pretrained_model(str(tmp_path), model_base=tiny_checkpoints[0], device="cpu")


def test_parameters_no_file_provides_are_an_error_not_newly_initialised(build, tiny_checkpoints, tmp_path):
    model = build("fusion_llama", fusion_layer_ids=[0, 2])
    _save_lora_run(model, tmp_path, tiny_checkpoints)
    kept = {k: v.clone() for k, v in model.state_dict().items() if ".layers.0.self_attn.fusion." in k}
    save_file(kept, str(tmp_path / NON_LORA_TRAINABLES))  # layer 2's branch left out
    with pytest.raises(
        KeyError, match=r"4 parameter\(s\) would stay newly initialised.*layers\.2\.self_attn\.fusion"
    ):
        load_pretrained_model(str(tmp_path), model_base=tiny_checkpoints[0], device="cpu")


def test_a_wrong_shape_tensor_names_key_file_and_shapes(build, tiny_checkpoints, tmp_path):
    model = build("fusion_llama")
    _save_lora_run(model, tmp_path, tiny_checkpoints)
    state = load_file(str(tmp_path / NON_LORA_TRAINABLES))
    key = "model.layers.0.self_attn.fusion.alpha"
    state[key] = torch.ones(1)  # one scale for three targets: copy_ would have broadcast it
    save_file(state, str(tmp_path / NON_LORA_TRAINABLES))
    with pytest.raises(
        ValueError,
        match=rf"{NON_LORA_TRAINABLES}: {key} has shape \(1,\), but the model's parameter has shape \(3,\)",
    ):
        load_pretrained_model(str(tmp_path), model_base=tiny_checkpoints[0], device="cpu")


def test_a_complete_checkpoint_saved_with_other_targets_names_the_mismatched_keys(
    build, tiny_checkpoints, tmp_path
):
    _save_complete(build("fusion_llama"), tmp_path, tiny_checkpoints)
    config = json.loads((tmp_path / "config.json").read_text())
    config["fusion_targets"] = ["q"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"fusion\.alpha: checkpoint \(3,\) vs model \(1,\)"):
        load_pretrained_model(str(tmp_path), device="cpu")


def test_a_vision_tower_of_another_shape_names_the_key(build, tiny_checkpoints, tmp_path):
    _, vision = tiny_checkpoints
    config = json.loads(Path(vision, "config.json").read_text())
    shutil.copytree(vision, tmp_path / "tower")
    other = config.get("vision_config", config)
    other["intermediate_size"] = other["intermediate_size"] * 2
    (tmp_path / "tower" / "config.json").write_text(json.dumps(config))
    source = CLIPVisionModel(CLIPVisionConfig(**{k: v for k, v in other.items() if k != "model_type"}))
    source.save_pretrained(tmp_path / "tower")
    model = build("fusion_llama", randomize=False)
    with pytest.raises(ValueError, match=r"tower: .*fc1.weight has shape \(\d+, \d+\), but the model's"):
        model.get_vision_tower().load_pretrained_weights(str(tmp_path / "tower"))


def test_projector_only_checkpoint_plus_base(build, images, tiny_checkpoints, tmp_path):
    llm, _ = tiny_checkpoints
    model = build("llava_llama")
    projector = {k: v.clone() for k, v in model.state_dict().items() if "mm_projector" in k}
    save_file(projector, str(tmp_path / MM_PROJECTOR))
    model.config.save_pretrained(tmp_path)
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")
    assert_same_logits(_logits(loaded, images), _logits(model, images), model.config)


def test_bad_inputs_raise_naming_the_culprit(build, tiny_checkpoints, tmp_path):
    llm, _ = tiny_checkpoints
    with pytest.raises(FileNotFoundError, match="does/not/exist"):
        load_pretrained_model("./does/not/exist", device="cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_pretrained_model(llm, load_8bit=True, device="cpu")
    with pytest.raises(ValueError, match="complete checkpoint"):
        load_pretrained_model(llm, model_base=llm, device="cpu")
    model = build("llava_llama")
    save_file({"model.mm_projector.9.weight": torch.zeros(1)}, str(tmp_path / MM_PROJECTOR))
    model.config.save_pretrained(tmp_path)
    with pytest.raises(KeyError, match="mm_projector.9.weight"):
        load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")


def test_plain_llama_checkpoint_loads_without_image_processor(tiny_checkpoints):
    llm, _ = tiny_checkpoints
    tokenizer, model, processor, _ = load_pretrained_model(llm, device="cpu")
    assert isinstance(model, LlamaForCausalLM) and processor is None and tokenizer.bos_token == "<s>"


@pytest.mark.parametrize(
    "where", ["/no/such/model", "./no-such-model", "no-such-model", "~/no-such-model", "runs/missing"]
)
def test_a_missing_local_path_is_named_as_a_path_never_tried_on_the_hub(
    tiny_checkpoints, tmp_path, monkeypatch, where
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # `runs/missing` is a relative path under an existing folder, not a hub id
    llm, vision = tiny_checkpoints
    with pytest.raises(FileNotFoundError, match=f"model path {where}: no such folder"):
        load_pretrained_model(where, device="cpu")
    with pytest.raises(FileNotFoundError, match=f"LLM {where}: no such folder"):
        build_from_backbones("fusion_llama", where, vision)
    with pytest.raises(FileNotFoundError, match=f"vision tower {where}: no such folder"):
        build_from_backbones("fusion_llama", llm, where)


def test_a_missing_model_base_and_mm_vision_tower_are_named(build, tiny_checkpoints, tmp_path):
    _save_lora_run(build("fusion_llama"), tmp_path / "lora", tiny_checkpoints)
    with pytest.raises(FileNotFoundError, match="model base ./runs/llm: no such folder"):
        load_pretrained_model(str(tmp_path / "lora"), model_base="./runs/llm", device="cpu")
    model = build("fusion_llama")
    model.config.mm_vision_tower = str(tmp_path / "moved-tower")
    _save_complete(model, tmp_path / "complete", tiny_checkpoints)
    state = {
        k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")
    }
    save_file(state, str(tmp_path / "complete" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(FileNotFoundError, match=f"vision tower {tmp_path / 'moved-tower'}: no such folder"):
        load_pretrained_model(str(tmp_path / "complete"), device="cpu")


def test_llavas_positional_signature_and_placement_keywords(build, images, tiny_checkpoints, tmp_path):
    model = build("llava_llama")
    _save_complete(model, tmp_path, tiny_checkpoints)
    # LLaVA's merge_lora_weights.py: `load_pretrained_model(path, base, name, device_map="cpu")`.
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), None, "llava-v1.5-7b", device_map="cpu")
    assert loaded.device.type == "cpu"
    assert_same_logits(_logits(loaded, images), _logits(model, images), model.config)
    with pytest.raises(
        ValueError, match="use_flash_attn=True asks for flash_attention_2, but attn_implementation='eager'"
    ):
        load_pretrained_model(
            str(tmp_path), None, None, use_flash_attn=True, device="cpu", attn_implementation="eager"
        )
    with pytest.raises(ValueError, match="device_map='balanced': only 'auto' or one device"):
        load_pretrained_model(str(tmp_path), None, None, device_map="balanced")


def test_resolve_device_follows_llavas_device_and_device_map_rules():
    assert resolve_device("cpu", "cuda:0") == "cpu"  # an explicit device other than "cuda" wins
    assert resolve_device("cuda", "cpu") == "cpu"  # with "cuda", the device_map decides
    assert resolve_device("cuda", {"": "cpu"}) == "cpu"
    assert resolve_device(None, "auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        for device, device_map in (("cuda", "auto"), ("cuda", 0), (None, "cuda:1")):
            with pytest.raises(RuntimeError, match="CUDA is not available here: pass device='cpu'"):
                resolve_device(device, device_map)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_text_only_lora_loads_on_its_base_for_any_family(family, tiny_backbones, tmp_path):
    """A LoRA run of a plain LLM (no tower): the base's own causal LM class, with the adapter merged."""
    llm, _ = tiny_backbones(family)
    base = AutoModelForCausalLM.from_pretrained(llm)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(base, lora)
    _perturb_lora(peft_model)
    peft_model.save_pretrained(tmp_path)
    base.config.save_pretrained(tmp_path)
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        expected = peft_model.merge_and_unload()(input_ids=ids).logits
    _, loaded, processor, _ = load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")
    assert processor is None and type(loaded) is type(AutoModelForCausalLM.from_pretrained(llm))
    with torch.no_grad():  # both merged by PEFT, both under SDPA: the same operations in the same order
        assert torch.equal(loaded(input_ids=ids).logits, expected)
