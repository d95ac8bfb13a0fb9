"""Save/load round trips through `from_pretrained` and `load_pretrained_model`, for every checkpoint kind."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaForCausalLM
from llava.model.builder import MM_PROJECTOR, NON_LORA_TRAINABLES, load_pretrained_model
from llava.model.vision_tower import load_image_processor

IDS = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42]])


def _logits(model, images):
    with torch.no_grad():
        return model(input_ids=IDS, images=images[:1]).logits


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
    assert torch.allclose(_logits(loaded, images), _logits(model, images), atol=1e-6)
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
    assert torch.allclose(_logits(loaded, images), _logits(model, images), atol=1e-6)


def test_lora_checkpoint_plus_base_equals_merged_model(build, images, tiny_checkpoints, tmp_path):
    llm, _ = tiny_checkpoints
    model = build("fusion_llama")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.layers\.[1-3]\.(self_attn|mlp)\.\w+_proj")
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path)
    trainables = {k: v.clone() for k, v in model.state_dict().items() if ".fusion." in k}
    save_file(trainables, str(tmp_path / NON_LORA_TRAINABLES))
    model.config.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(llm).save_pretrained(tmp_path)
    load_image_processor(tiny_checkpoints[1]).save_pretrained(tmp_path)
    expected = _logits(peft_model.merge_and_unload(), images)

    with pytest.raises(ValueError, match="--model-base"):
        load_pretrained_model(str(tmp_path), device="cpu")
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")
    assert isinstance(loaded, FusionLlamaForCausalLM)
    assert torch.allclose(_logits(loaded, images), expected, atol=1e-5)


def test_projector_only_checkpoint_plus_base(build, images, tiny_checkpoints, tmp_path):
    llm, _ = tiny_checkpoints
    model = build("llava_llama")
    projector = {k: v.clone() for k, v in model.state_dict().items() if "mm_projector" in k}
    save_file(projector, str(tmp_path / MM_PROJECTOR))
    model.config.save_pretrained(tmp_path)
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), model_base=llm, device="cpu")
    assert torch.allclose(_logits(loaded, images), _logits(model, images), atol=1e-6)


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
