"""Conversation templates, prompt tokenisation and image preprocessing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates, get_conv_template
from llava.mm_utils import (
    expand2square,
    get_model_name_from_path,
    process_images,
    tokenize_conversation,
    tokenizer_image_token,
)
from llava.model.vision_tower import load_image_processor

VICUNA_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\nWhat is shown? ASSISTANT:"
)


def _conversation(name: str, turns: list[tuple[str, str | None]]):
    conv = get_conv_template(name)
    for user, answer in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], answer)
    return conv


def test_vicuna_v1_prompt_is_llavas_exactly():
    assert _conversation("vicuna_v1", [("<image>\nWhat is shown?", None)]).get_prompt() == VICUNA_PROMPT
    two = _conversation("v1", [("Q1", "A1"), ("Q2", None)]).get_prompt()
    assert two.endswith("USER: Q1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:")


def test_llama_2_mistral_and_plain_prompts():
    llama2 = _conversation("llava_llama_2", [("Q1", "A1"), ("Q2", None)]).get_prompt()
    assert llama2.startswith("[INST] <<SYS>>\nYou are a helpful language and vision assistant.")
    assert llama2.endswith("\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]")
    assert _conversation("mistral_instruct", [("Q1", "A1"), ("Q2", None)]).get_prompt() == (
        "[INST] Q1 [/INST] A1 </s>[INST] Q2 [/INST]"
    )
    assert _conversation("plain", [("<image>", "a caption")]).get_prompt() == "<image>a caption\n"


@pytest.mark.parametrize("name", sorted(conv_templates))
def test_segments_concatenate_to_the_prompt_and_supervise_only_replies(name):
    conv = _conversation(name, [("<image>\nQ1", "A1"), ("Q2", "A2")])
    segments = conv.segments()
    assert "".join(text for text, _ in segments) == conv.get_prompt()
    supervised = [text for text, sup in segments if sup]
    assert len(supervised) == 2 and "A1" in supervised[0] and "A2" in supervised[1]
    assert all("Q" not in text for text in supervised)


def test_roles_must_alternate():
    conv = get_conv_template("vicuna_v1")
    conv.append_message("ASSISTANT", "hi")
    with pytest.raises(ValueError, match="expected 'USER'"):
        conv.get_prompt()
    with pytest.raises(ValueError, match="unknown conversation template"):
        get_conv_template("nope")


def test_tokenize_conversation_labels_are_the_replies_with_end_token(tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])
    conv = _conversation("vicuna_v1", [("<image>\nWhat is shown?", "red circle"), ("Count?", "two")])
    ids, labels = tokenize_conversation(conv, tokenizer)
    assert ids[0] == tokenizer.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert supervised.count(tokenizer.eos_token_id) == 2
    assert tokenizer.decode([t for t in supervised if t != tokenizer.eos_token_id]).split() == [
        "red",
        "circle",
        "two",
    ]
    prompt_ids = tokenizer_image_token(
        _conversation("vicuna_v1", [("<image>\nWhat is shown?", None)]).get_prompt(), tokenizer
    )
    assert ids[: len(prompt_ids)] == prompt_ids  # inference prompt == training prefix


def test_tokenizer_image_token_places_placeholders(tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])
    ids = tokenizer_image_token("<image>\nleft <image> right", tokenizer, return_tensors="pt")
    assert isinstance(ids, torch.Tensor) and (ids == IMAGE_TOKEN_INDEX).sum() == 2
    assert ids[0] == tokenizer.bos_token_id and ids[1] == IMAGE_TOKEN_INDEX


def test_process_images_pad_uses_mean_colour(tiny_checkpoints):
    processor = load_image_processor(tiny_checkpoints[1])
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand2square(wide, (10, 20, 30))
    assert (
        square.size == (40, 40)
        and square.getpixel((0, 0)) == (10, 20, 30)
        and square.getpixel((20, 20)) == (255, 0, 0)
    )
    padded = process_images([wide], processor, "pad")
    resized = process_images([wide], processor, "resize")
    assert padded.shape == resized.shape == (1, 3, 32, 32)
    mean = torch.tensor(processor.image_mean)
    corner = padded[0, :, 0, 0] * torch.tensor(processor.image_std) + mean
    assert torch.allclose(corner, torch.tensor([int(m * 255) / 255 for m in processor.image_mean]), atol=0.02)
    assert torch.allclose(
        resized[0, :, 0, 0] * torch.tensor(processor.image_std) + mean, torch.tensor([1.0, 0, 0]), atol=0.02
    )
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        process_images([wide], processor, "anyres")


def test_model_name_from_path():
    assert get_model_name_from_path("/x/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("/x/run/checkpoint-500") == "run_checkpoint-500"
