"""The gates of `--compile_fusion True` (`llava.model.compiled_fusion`): with its fusion layers
compiled, a model keeps its state-dict keys, gives the eager model's logits and gradients within
float32's reordering tolerance (inductor fuses and reorders the same sums), and the same greedy
tokens. One compiled model per fusion layer, the paper's concat layer on the tiny Llama and the
published layer on the tiny Qwen2: compiling takes tens of seconds each."""

from __future__ import annotations

import copy

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import build_from_backbones
from llava.model.compiled_fusion import compile_fusion, fusion_modules
from llava.model.vision_tower import tower_image_size
from tests import tolerances
from tests.model.model_helpers import randomize_trainables

IMG = IMAGE_TOKEN_INDEX


def training_batch(vocab: int, side: int) -> dict:
    """Two right-padded samples with an image each (one image after the first token), and labels."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 12), generator=generator)
    ids[:, 1] = IMG
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100
    images = torch.randn(2, 3, side, side, generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "images": images}


def logits_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), grads


@pytest.mark.slow
@pytest.mark.parametrize(("llm", "variant"), [("llama", "concat"), ("qwen2", "published")])
def test_compiled_fusion_equals_eager(tiny_backbones, llm, variant):
    fields = {"fusion_variant": variant}
    if variant == "concat":
        fields["fusion_dropout"] = 0.0  # the copies must draw no random masks
    eager, _ = build_from_backbones(
        "fusion_llama", *tiny_backbones(llm, "clip"), attn_implementation="sdpa", **fields
    )
    randomize_trainables(eager)
    compiled = copy.deepcopy(eager)
    assert compile_fusion(compiled) == len(fusion_modules(eager)) > 0
    assert list(compiled.state_dict()) == list(eager.state_dict())

    side = tower_image_size(eager.config.vision_config)
    batch = training_batch(eager.config.vocab_size, side)
    expected_logits, expected_grads = logits_and_grads(eager.train(), batch)
    logits, grads = logits_and_grads(compiled.train(), batch)
    # The same sums in other orders: float32's reordering bound over the model's contractions
    # (twice as many for a gradient: the forward's, then the backward's, transposed).
    width, depth = tolerances.network(
        eager.config, tokens=batch["input_ids"].shape[1] + eager.config.num_image_tokens
    )
    assert (logits - expected_logits).abs().max() <= tolerances.forward(
        width, depth, expected_logits.abs().max().item()
    )
    assert grads.keys() == expected_grads.keys() and any(".fusion." in name for name in grads)
    for name, grad in expected_grads.items():
        bound = tolerances.forward(width, 2 * depth, grad.abs().max().item())
        assert (grads[name] - grad).abs().max() <= bound, name

    prompt = torch.tensor([[1, 40, IMG, 41, 42]])
    image = batch["images"][:1]
    greedy = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
    expected_tokens = eager.eval().generate(prompt, images=image, **greedy)
    assert torch.equal(compiled.eval().generate(prompt, images=image, **greedy), expected_tokens)


def test_a_model_without_fusion_layers_is_refused(tiny_backbones):
    baseline, _ = build_from_backbones("llava_llama", *tiny_backbones("llama", "clip"))
    with pytest.raises(ValueError, match="no fusion layers to compile"):
        compile_fusion(baseline)
