"""KV-cached `generate` == cache-free `generate` == full recompute, for both models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import tokenize_conversation
from llava.model.uncached_generation import generate_without_cache

IMG = IMAGE_TOKEN_INDEX
GREEDY = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}


def _three_ways(model, ids, images, attention_mask=None):
    cached = model.generate(ids, images=images, attention_mask=attention_mask, **GREEDY)
    uncached = model.generate(ids, images=images, attention_mask=attention_mask, use_cache=False, **GREEDY)
    recomputed = generate_without_cache(model, ids, images, attention_mask, max_new_tokens=8)
    return cached, uncached, recomputed


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
@pytest.mark.parametrize(
    "case",
    ["one_image", "two_images", "text_only"],
)
def test_cached_equals_uncached_equals_recompute(build, images, model_type, case):
    model = build(model_type)
    if case == "one_image":
        ids, imgs = torch.tensor([[1, 40, IMG, 41, 42, 43]]), images[:1]
    elif case == "two_images":
        ids, imgs = torch.tensor([[1, 40, IMG, 41, IMG, 42, 43]]), images[:2]
    else:
        ids, imgs = torch.tensor([[1, 40, 41, 42, 43]]), None
    cached, uncached, recomputed = _three_ways(model, ids, imgs)
    assert cached.shape == (1, 8)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, recomputed)


def test_multi_turn_conversation(build, images, tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "<image>\nWhat is in the image?")
    conv.append_message("ASSISTANT", "A red circle.")
    conv.append_message("USER", "How many squares are there?")
    conv.append_message("ASSISTANT", None)
    ids, _ = tokenize_conversation(conv, tokenizer)
    ids = torch.tensor([ids])
    model = build("fusion_llama")
    cached, uncached, recomputed = _three_ways(model, ids, images[:1])
    assert torch.equal(cached, uncached) and torch.equal(cached, recomputed)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_left_padded_batch_equals_batch_of_one(build, images, model_type):
    model = build(model_type)
    prompts = [[1, 40, IMG, 41, 42, 43, 44], [1, IMG, 45], [1, 46, 47, 48]]  # image, image, text-only
    per_prompt_images = [images[0:1], images[1:2], None]
    singles = [
        model.generate(torch.tensor([p]), images=im, **GREEDY)
        for p, im in zip(prompts, per_prompt_images, strict=True)
    ]
    width = max(map(len, prompts))
    pad = model.generation_config.pad_token_id
    batch = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(batch, images=images[:2], attention_mask=mask, **GREEDY)
    for row, single in zip(batched, singles, strict=True):
        assert torch.equal(row, single[0])
    right_padded = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
    right_mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    assert torch.equal(
        model.generate(right_padded, images=images[:2], attention_mask=right_mask, **GREEDY), batched
    )


def test_sampling_beam_search_and_stop_strings(build, images, tiny_checkpoints):
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoints[0])
    model = build("fusion_llama")
    ids = torch.tensor([[1, 40, IMG, 41]])
    torch.manual_seed(0)
    first = model.generate(
        ids, images=images[:1], do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=6
    )
    torch.manual_seed(0)
    second = model.generate(
        ids, images=images[:1], do_sample=True, temperature=1.0, top_p=0.9, max_new_tokens=6
    )
    assert torch.equal(first, second) and first.shape[1] == 6

    beams = model.generate(
        ids, images=images[:1], num_beams=3, max_new_tokens=6, min_new_tokens=6, do_sample=False
    )
    assert beams.shape == (1, 6)
    beam_scores = model.generate(
        ids,
        images=images[:1],
        num_beams=3,
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
    ).sequences_scores
    greedy_ids = model.generate(
        ids, images=images[:1], **{**GREEDY, "max_new_tokens": 6, "min_new_tokens": 6}
    )
    assert beam_scores.shape == (1,) and greedy_ids.shape == (1, 6)

    free = model.generate(ids, images=images[:1], max_new_tokens=12, min_new_tokens=12, do_sample=False)
    text = tokenizer.decode(free[0])
    stop = text.strip().split()[1] if len(text.split()) > 1 else text.strip()[:2]
    stopped = model.generate(
        ids, images=images[:1], max_new_tokens=12, do_sample=False, stop_strings=[stop], tokenizer=tokenizer
    )
    assert stopped.shape[1] < 12
    assert stop in tokenizer.decode(stopped[0])


def test_fusion_decode_steps_receive_no_vision(build, images):
    model = build("fusion_llama")
    seen = []
    attention = model.model.layers[0].self_attn
    hook = attention.fusion.register_forward_hook(lambda mod, args, out: seen.append(args[2] is not None))
    model.generate(torch.tensor([[1, 40, IMG, 41]]), images=images[:1], **GREEDY)
    hook.remove()
    assert seen[0] is True and not any(seen[1:])  # vision at prefill only


def test_eos_stops_generation(build, images):
    model = build("fusion_llama")
    ids = torch.tensor([[1, 40, IMG, 41]])
    free = model.generate(ids, images=images[:1], **GREEDY)
    model.generation_config.eos_token_id = int(free[0, 2])
    stopped = model.generate(ids, images=images[:1], max_new_tokens=8, do_sample=False)
    assert stopped[0].tolist() == free[0, :3].tolist()


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_prompt_ids_passed_as_input_ids_keyword(build, images, model_type):
    model = build(model_type)
    ids = torch.tensor([[1, 40, IMG, 41, 42, 43]])
    positional = model.generate(ids, images=images[:1], **GREEDY)
    assert torch.equal(model.generate(input_ids=ids, images=images[:1], **GREEDY), positional)
    with pytest.raises(ValueError, match="once, as `inputs` or as `input_ids`"):
        model.generate(ids, input_ids=ids, images=images[:1], **GREEDY)
    with pytest.raises(ValueError, match="once, as `inputs` or as `input_ids`"):
        model.generate(images=images[:1], **GREEDY)
