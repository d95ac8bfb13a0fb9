"""Conversation templates, prompt tokenisation and image preprocessing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates, get_conv_template
from llava.data.preprocess import supervised_spans
from llava.mm_utils import (
    expand2square,
    get_model_name_from_path,
    process_images,
    tokenize_conversation,
    tokenizer_image_token,
)
from llava.model.tokenizers import ensure_pad_token
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
def test_segments_concatenate_to_the_prompt_and_supervise_only_replies(name, tiny_backbones):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbones("qwen2", "clip")[0])  # has a chat template
    conv = _conversation(name, [("<image>\nQ1", "A1"), ("Q2", "A2")])
    segments = conv.segments(tokenizer)
    assert "".join(text for text, _ in segments) == conv.get_prompt(tokenizer)
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
    # The corners lie in regions of one colour, which resampling keeps at their 8-bit value: half an
    # 8-bit level tells it from the next ones and leaves room for float32's rounding of the rescaling
    # and normalisation (and of their inverse here), a few units of 2^-24.
    half_level = 0.5 / 255
    pad_colour = torch.tensor([int(m * 255) / 255 for m in processor.image_mean])
    assert torch.allclose(corner, pad_colour, rtol=0, atol=half_level)
    red = resized[0, :, 0, 0] * torch.tensor(processor.image_std) + mean
    assert torch.allclose(red, torch.tensor([1.0, 0, 0]), rtol=0, atol=half_level)
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        process_images([wide], processor, "anyres")


def test_model_name_from_path():
    assert get_model_name_from_path("/x/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("/x/run/checkpoint-500") == "run_checkpoint-500"


LLAMA_3_PROMPT = (
    "<|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nQ1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "A1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
CHATML_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
    "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
)


def test_llama_3_and_qwen_2_prompts_are_the_families_formats():
    conv = _conversation("llama_3", [("Q1", "A1"), ("Q2", None)])
    conv.system = "SYS"
    assert conv.get_prompt() == LLAMA_3_PROMPT
    assert _conversation("qwen_2", [("Q1", "A1"), ("Q2", None)]).get_prompt() == CHATML_PROMPT


# template -> the tiny LLM whose tokenizer knows its special tokens
TEMPLATE_TOKENIZERS = {
    "vicuna_v1": "llama",
    "llava_v1": "llama",
    "v1": "llama",
    "llava_llama_2": "llama",
    "mistral_instruct": "mistral",
    "llama_3": "llama3",
    "qwen_2": "qwen2",
    "chat_template": "qwen2",
}


@pytest.mark.parametrize(
    "name, llm", [*TEMPLATE_TOKENIZERS.items(), ("chat_template", "llama3")], ids=lambda v: str(v)
)
def test_supervised_tokens_are_exactly_the_answers(name, llm, tiny_backbones):
    """Per template: the supervised tokens are the answers' tokens followed by the template's end
    token, nothing else; the prompt for the next answer is the training prefix."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbones(llm, "clip")[0])
    answers = ["red circle", "two squares"]
    conv = _conversation(name, [("<image>\nWhat is shown?", answers[0]), ("How many?", answers[1])])
    ids, labels = tokenize_conversation(conv, tokenizer)
    spans = supervised_spans(labels)
    assert len(spans) == 2
    end_id = tokenizer.eos_token_id
    for (start, stop), answer in zip(spans, answers, strict=True):
        assert labels[start:stop] == ids[start:stop]
        assert ids[stop - 1] == end_id  # the end of turn is learned
        text = tokenizer.decode(ids[start : stop - 1], skip_special_tokens=False)
        assert text.strip() == answer
    assert sum(1 for label in labels if label != IGNORE_INDEX) == sum(b - a for a, b in spans)
    if tokenizer.bos_token_id is not None:
        assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    prompt_conv = _conversation(name, [("<image>\nWhat is shown?", answers[0]), ("How many?", None)])
    prompt_ids, _ = tokenize_conversation(prompt_conv, tokenizer)
    assert ids[: len(prompt_ids)] == prompt_ids  # inference prompt == training prefix


def test_chat_template_needs_a_tokenizer_with_one(tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])  # the Llama-2 style one has none
    conv = _conversation("chat_template", [("Q", "A")])
    with pytest.raises(ValueError, match="has none: choose a named template"):
        tokenize_conversation(conv, tokenizer)


def test_pad_token_is_chosen_without_adding_one(tiny_backbones):
    """Llama-3 has no pad or unk token: its reserved padding token is used, the vocabulary stays."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbones("llama3", "clip")[0])
    size = len(tokenizer)
    assert tokenizer.pad_token is None and tokenizer.unk_token is None
    ensure_pad_token(tokenizer, "tiny llama3")
    assert tokenizer.pad_token == "<|finetune_right_pad_id|>" and len(tokenizer) == size
    qwen = AutoTokenizer.from_pretrained(tiny_backbones("qwen2", "clip")[0])
    assert ensure_pad_token(qwen, "tiny qwen2").pad_token == "<|endoftext|>"
