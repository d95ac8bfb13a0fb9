"""transformers' llava format: the export that `LlavaForConditionalGeneration` and
`AutoProcessor` load, and the import back into the LLaVA-1.5 baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

from llava.conversation import get_conv_template
from llava.inference import DecodingSettings, LoadedModel, open_conversation, with_image_tokens
from llava.model.builder import build_from_backbones
from llava.model.llava_hf import chat_template, load_llava_hf
from llava.model.vision_tower import load_image_processor
from llava.tools.export_llava_hf import export_llava_hf
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower
from tests import tolerances

QUESTION = "What is in the image?"


def _baseline_checkpoint(root, llm, vision, **fields):
    """A complete llava_llama checkpoint with a non-trivial projector."""
    model, _ = build_from_backbones("llava_llama", str(llm), str(vision), **fields)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.model.mm_projector.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(root)
    AutoTokenizer.from_pretrained(llm).save_pretrained(root)
    load_image_processor(str(vision)).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """A tiny Llama whose tokenizer prefixes text after special tokens as Llama's does, and a tower."""
    root = tmp_path_factory.mktemp("llava_hf")
    return make_llm(root, legacy_prefix=True), make_vision_tower(root)


@pytest.fixture(scope="module", params=[[-2], [-1, -2]], ids=["layer-2", "hd-layers-1-2"])
def exported(request, backbones, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    checkpoint = _baseline_checkpoint(root / "ckpt", *backbones, mm_vision_select_layer=request.param)
    return checkpoint, export_llava_hf(checkpoint, root / "hf")


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # not square: the `pad` handling matters


def _processor_inputs(processor, image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[image], text=text, return_tensors="pt")


def test_chat_template_renders_the_conversation_template(tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])
    conv = get_conv_template("vicuna_v1")
    conv.append_message(conv.roles[0], with_image_tokens(QUESTION, 2))
    conv.append_message(conv.roles[1], "A red circle.")
    conv.append_message(conv.roles[0], "And now?")
    conv.append_message(conv.roles[1], None)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": QUESTION}],
        },
        {"role": "assistant", "content": "A red circle."},
        {"role": "user", "content": "And now?"},
    ]

    def render(messages):
        return tokenizer.apply_chat_template(
            messages, chat_template=chat_template(conv), tokenize=False, add_generation_prompt=True
        )

    assert render(messages) == conv.get_prompt()
    system = [{"role": "system", "content": "Be brief."}, *messages]
    assert render(system) == "Be brief." + conv.get_prompt()[len(conv.system) :]
    with pytest.raises(ValueError, match="only vicuna_v1-style"):
        chat_template(get_conv_template("llava_llama_2"))


def test_export_loads_in_transformers_with_identical_pixels_logits_and_answers(exported):
    checkpoint, out = exported
    hf_model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    ours = LoadedModel.load(checkpoint, device="cpu")
    image = _image()
    ids = ours.prompt_ids(open_conversation("vicuna_v1", with_image_tokens(QUESTION, 1)))
    pixels = ours.encode_images([image])
    inputs = _processor_inputs(processor, image)

    assert torch.equal(inputs["pixel_values"], pixels)
    image_id = hf_model.config.image_token_index
    expanded = [t for i in ids for t in ([image_id] * ours.model.config.num_image_tokens if i < 0 else [i])]
    assert inputs["input_ids"][0].tolist() == expanded
    with torch.no_grad():
        our_logits = ours.model(input_ids=torch.tensor([ids]), images=pixels).logits  # [1, T, V]
        their_logits = hf_model(**inputs).logits  # [1, T, V + 1]: the `<image>` column last
    vocab = our_logits.shape[-1]
    # transformers' llava model: its own image merge and an LM head with the `<image>` row added
    atol = tolerances.model_forward(our_logits, ours.model.config, tokens=our_logits.shape[1])
    torch.testing.assert_close(their_logits[..., :vocab], our_logits, rtol=0, atol=atol)
    assert torch.all(their_logits[..., vocab:] == 0)

    settings = DecodingSettings(max_new_tokens=12)
    answer = ours.generate([ids], [pixels], settings)[0]
    generated = hf_model.generate(**inputs, max_new_tokens=12, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert processor.tokenizer.decode(generated[0, prompt_len:], skip_special_tokens=True).strip() == answer


def test_llava_hf_folder_loads_back_as_the_baseline(exported):
    checkpoint, out = exported
    ours = LoadedModel.load(checkpoint, device="cpu")
    back = load_llava_hf(out)
    image = _image()
    ids = ours.prompt_ids(open_conversation("vicuna_v1", with_image_tokens(QUESTION, 1)))
    pixels = ours.encode_images([image])
    with torch.no_grad():
        expected = ours.model(input_ids=torch.tensor([ids]), images=pixels).logits
        got = back(input_ids=torch.tensor([ids]), images=pixels).logits
    # the import keeps the LM head's `<image>` row: another matmul's shape, maybe its blocking
    atol = tolerances.model_forward(expected, ours.model.config, tokens=expected.shape[1])
    torch.testing.assert_close(got[..., : expected.shape[-1]], expected, rtol=0, atol=atol)
    again = LoadedModel(ours.tokenizer, back, ours.image_processor, ours.context_len, "back")
    settings = DecodingSettings(max_new_tokens=12)
    assert again.generate([ids], [pixels], settings) == ours.generate([ids], [pixels], settings)


def test_export_refuses_a_tokenizer_that_breaks_text_after_image_differently(tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints  # the default tiny tokenizer: `▁` only at the start of the input
    checkpoint = _baseline_checkpoint(tmp_path / "ckpt", llm, vision)
    with pytest.raises(
        ValueError, match=r"tokenise prompts differently \(token \d+: .*--allow-prompt-mismatch"
    ):
        export_llava_hf(checkpoint, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    out = export_llava_hf(checkpoint, tmp_path / "hf", allow_prompt_mismatch=True)
    assert (out / "model.safetensors").exists()


def test_export_refuses_inverse_llava(tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints
    model, _ = build_from_backbones("fusion_llama", llm, vision)
    model.save_pretrained(tmp_path / "ckpt")
    AutoTokenizer.from_pretrained(llm).save_pretrained(tmp_path / "ckpt")
    load_image_processor(vision).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="fusion_llama checkpoint; only the LLaVA-1.5 baseline"):
        export_llava_hf(str(tmp_path / "ckpt"), tmp_path / "hf")
