"""Padding-free batches equal padded ones: the same logits per sample, the same loss and the same
gradient of every parameter (fp32, up to the rounding of other summation orders), for both models,
with image samples, text-only samples and a sample with two images: eager and SDPA on Llama + CLIP
and Qwen2 + SigLIP, SDPA on every LLM family with every tower, under activation checkpointing, and
under flash-attention's varlen conventions (computed per sample on CPU), and under the
per-sample kernel `--padding_free True` runs off flash-attention (every family). Also: that kernel
against a dense mask, the collator's labels and positions, the expansion's positions, image mask and
vision stream, and the errors on malformed packed rows."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
from transformers.modeling_flash_attention_utils import (
    _is_packed_sequence,
    prepare_fa_kwargs_from_position_ids,
)

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.dataset import DataCollatorForSupervisedDataset
from llava.data.packing import PaddingFreeCollator
from llava.model import per_sample_attention as per_sample_attention_module
from llava.model.builder import build_from_backbones
from llava.model.multimodal import merge_image_positions, packed_sample_ids, restarting_positions
from llava.model.per_sample_attention import PER_SAMPLE, per_sample_attention, sample_bounds, window_mask
from llava.model.vision_tower import tower_image_size
from llava.tools.make_tiny_checkpoints import LLMS
from tests import tolerances
from tests.model.model_helpers import randomize_trainables

# (images in the sample, text length, supervised tail length): one image with a short answer,
# text only (long), two images, text only (short)
LAYOUT = [(1, 12, 3), (0, 30, 20), (2, 18, 6), (0, 7, 4)]


def make_samples(vocab: int, seed: int = 0) -> list[dict]:
    """Samples as the dataset gives them: placeholders after the first token, the prompt and the
    first label unsupervised, a supervised answer at the end."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for n_images, length, answer in LAYOUT:
        ids = torch.randint(3, vocab, (length,), generator=generator)
        ids = torch.cat([ids[:1], torch.full((n_images,), IMAGE_TOKEN_INDEX), ids[1:]])
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[-answer:] = ids[-answer:]
        samples.append({"input_ids": ids, "labels": labels, "images": None, "n_images": n_images})
    return samples


def attach_images(samples: list[dict], side: int, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    for sample in samples:
        if sample["n_images"]:
            sample["images"] = torch.randn(sample["n_images"], 3, side, side, generator=generator)


def build_model(backbones, model_type: str, attn: str):
    """A model in training mode (the fusion branch's dropout off) with random trainables."""
    llm, vision = backbones
    fields = {"fusion_dropout": 0.0} if model_type.startswith("fusion") else {}
    model, _ = build_from_backbones(model_type, llm, vision, attn_implementation=attn, **fields)
    randomize_trainables(model)
    model.config.use_cache = False
    return model.train()


def loss_and_grads(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Loss normalised as the trainer does (`num_items_in_batch` over `labels[..., 1:]`), every
    parameter's gradient, and the logits."""
    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "skipped_samples"}
    num_items = batch["labels"][..., 1:].ne(IGNORE_INDEX).sum()
    out = model(**inputs, num_items_in_batch=num_items, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads, out.logits.detach()


def tolerance(model, reference: torch.Tensor, row: int, backward: bool = False) -> float:
    """A packed row and a padded batch add the same terms in other orders: `tolerances.forward`
    over the model's contractions (twice as many for a gradient: the forward's, then the backward's,
    transposed), the packed row's `row` positions possibly the longest (a weight's gradient sums
    over them)."""
    width, depth = tolerances.network(model.config, tokens=row)
    return tolerances.forward(width, 2 * depth if backward else depth, reference.abs().max().item())


def assert_same_loss_and_grads(model, padded: tuple, packed: tuple, row: int) -> None:
    """`loss_and_grads` of a padded batch and of its packed row agree to summation order."""
    assert abs(padded[0] - packed[0]) <= tolerance(model, padded[0], row), (padded[0], packed[0])
    assert padded[1].keys() == packed[1].keys()
    for name, grad in padded[1].items():
        assert (grad - packed[1][name]).abs().max() <= tolerance(model, grad, row, backward=True), name


def compare(model, samples: list[dict]) -> None:
    padded = DataCollatorForSupervisedDataset(pad_token_id=0)(samples)
    packed = PaddingFreeCollator()(samples)
    assert packed["input_ids"].shape == (1, sum(s["input_ids"].shape[0] for s in samples))
    supervised = [b["labels"][..., 1:].ne(IGNORE_INDEX).sum() for b in (padded, packed)]
    assert supervised[0] == supervised[1] > 0  # the trainer's num_items_in_batch
    loss_p, grads_p, logits_p = loss_and_grads(model, padded)
    loss_f, grads_f, logits_f = loss_and_grads(model, packed)
    row = logits_f.shape[1]

    assert torch.isfinite(loss_p) and loss_p > 0
    assert any(".fusion." in n or "mm_projector" in n for n in grads_p)
    assert_same_loss_and_grads(model, (loss_p, grads_p), (loss_f, grads_f), row)
    # every sample's logits, read off its stretch of the packed row
    n_patches = model.config.num_image_tokens
    start = 0
    for b, sample in enumerate(samples):
        length = sample["input_ids"].shape[0] + sample["n_images"] * (n_patches - 1)
        expected, got = logits_p[b, :length], logits_f[0, start : start + length]
        assert (expected - got).abs().max() <= tolerance(model, expected, row), b
        start += length
    assert start == logits_f.shape[1]


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
@pytest.mark.parametrize("attn", ["eager", "sdpa", PER_SAMPLE])
@pytest.mark.parametrize(("llm", "tower"), [("llama", "clip"), ("qwen2", "siglip")])
def test_padding_free_equals_padded(tiny_backbones, model_type, attn, llm, tower):
    model = build_model(tiny_backbones(llm, tower), model_type, attn)
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    compare(model, samples)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
@pytest.mark.parametrize(
    ("llm", "tower"), [(llm, tower) for llm in LLMS for tower in ("clip", "siglip", "siglip2")]
)
def test_padding_free_equals_padded_every_family_and_tower(tiny_backbones, model_type, llm, tower):
    """SDPA; Mistral's 24-position sliding window is shorter than the long samples (the window
    counts within each sample), Qwen2/Qwen3 take theirs per layer, Gemma scales its embeddings."""
    model = build_model(tiny_backbones(llm, tower), model_type, "sdpa")
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    compare(model, samples)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
@pytest.mark.parametrize("llm", list(LLMS))
def test_per_sample_kernel_every_family(tiny_backbones, monkeypatch, model_type, llm):
    """`--padding_free True`'s kernel off flash-attention: the packed row per sample (every layer
    cuts it at the samples' bounds), the padded batch through its SDPA fallback; Mistral's
    24-position window cuts the long samples' blocks."""
    model = build_model(tiny_backbones(llm, "clip"), model_type, PER_SAMPLE)
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    cuts = []
    blockwise = per_sample_attention_module.blockwise_sdpa

    def recording_blockwise(query, key, value, bounds, *args):
        cuts.append(bounds)
        return blockwise(query, key, value, bounds, *args)

    monkeypatch.setattr(per_sample_attention_module, "blockwise_sdpa", recording_blockwise)
    compare(model, samples)
    n_patches = model.config.num_image_tokens
    lengths = [s["input_ids"].shape[0] + s["n_images"] * (n_patches - 1) for s in samples]
    assert cuts == [torch.tensor([0, *lengths]).cumsum(0).tolist()] * model.config.num_hidden_layers


@pytest.mark.parametrize("attn", ["sdpa", PER_SAMPLE])
def test_padding_free_under_activation_checkpointing(tiny_backbones, attn):
    """The packed row's positions reach every layer through the checkpointed decoder layers."""
    model = build_model(tiny_backbones("llama", "clip"), "fusion_llama", attn)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    compare(model, samples)


def varlen_reference_attention(module, query, key, value, attention_mask, **kwargs):
    """`per_sample_attention` (flash-attention varlen's computation on CPU: causal
    attention within each sample, cut by transformers' `cu_seqlens` from the positions the layer
    receives), recording the cuts and checking transformers' own packed-row detection."""
    if module.is_causal:
        assert attention_mask is None  # flash-attention's mask for a packed row: none, only positions
        position_ids = kwargs["position_ids"]
        assert _is_packed_sequence(position_ids, query.shape[0])
        (cu_seqlens, _), _ = prepare_fa_kwargs_from_position_ids(position_ids)
        VARLEN_CALLS.append(cu_seqlens.tolist())
    return per_sample_attention(module, query, key, value, attention_mask, **kwargs)


VARLEN_CALLS: list[list[int]] = []
AttentionInterface.register("varlen_reference", varlen_reference_attention)
AttentionMaskInterface.register("varlen_reference", flash_attention_mask)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_flash_attention_varlen_path_sees_each_sample(tiny_backbones, model_type):
    """Under flash-attention's conventions (no mask, positions per sample) every layer, the fusion
    layer included, gets the packed row's positions, from which transformers cuts it at exactly the
    samples' bounds; the result equals the padded batch under SDPA."""
    backbones = tiny_backbones("llama", "clip")
    model = build_model(backbones, model_type, "sdpa")
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    padded = loss_and_grads(model, DataCollatorForSupervisedDataset(pad_token_id=0)(samples))
    model.set_attn_implementation("varlen_reference")
    VARLEN_CALLS.clear()
    packed = loss_and_grads(model, PaddingFreeCollator()(samples))
    n_patches = model.config.num_image_tokens
    lengths = [s["input_ids"].shape[0] + s["n_images"] * (n_patches - 1) for s in samples]
    bounds = torch.tensor([0, *lengths]).cumsum(0).tolist()
    assert VARLEN_CALLS == [bounds] * model.config.num_hidden_layers
    assert_same_loss_and_grads(model, padded, packed, row=bounds[-1])


@pytest.mark.parametrize("window", [None, 5])
def test_per_sample_kernel_equals_block_diagonal_mask(window):
    """The kernel against SDPA over the whole row with the block-diagonal causal (windowed) mask:
    three samples, grouped-query heads (4 query heads on 2 key/value heads), forward and backward.
    Each score and each gradient sums over at most one sample's keys in either (S positions or
    the head width, the longest contraction), in another blocking."""
    generator = torch.Generator().manual_seed(0)
    lengths = [7, 1, 12]
    position_ids = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)  # [1, S]
    row = position_ids.shape[1]
    query = torch.randn(1, 4, row, 8, generator=generator, requires_grad=True)
    key, value = (torch.randn(1, 2, row, 8, generator=generator, requires_grad=True) for _ in range(2))
    module = torch.nn.Module()
    module.is_causal = True
    out, _ = per_sample_attention(
        module, query, key, value, None, sliding_window=window, position_ids=position_ids
    )
    grads = torch.autograd.grad(out.square().sum(), (query, key, value))

    bounds = sample_bounds(position_ids)
    assert bounds == [0, 7, 8, 20]
    mask = torch.zeros(row, row, dtype=torch.bool)
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        mask[start:end, start:end] = window_mask(end - start, window or row, mask.device)
    dense = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, enable_gqa=True
    )
    dense = dense.transpose(1, 2)  # [1, S, H, hd]
    dense_grads = torch.autograd.grad(dense.square().sum(), (query, key, value))
    width, depth = max(row, query.shape[-1]), 2  # scores, then their mixing of values
    assert (out - dense).abs().max() <= tolerances.forward(width, depth, dense.abs().max().item())
    for got, expected in zip(grads, dense_grads, strict=True):
        assert (got - expected).abs().max() <= tolerances.forward(
            width, 2 * depth, expected.abs().max().item()
        )
    if window is not None:  # the window bites: the last query of the long sample sees 5 keys, not 12
        assert mask[19].sum() == 5


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_per_sample_model_generates_as_sdpa(tiny_backbones, model_type):
    """A model left on the kernel after training generates as under SDPA: a left-padded batch and
    the cached decode steps take SDPA's mask, a batch of one its prompt as one block."""
    model = build_model(tiny_backbones("llama", "clip"), model_type, "sdpa").eval()
    side = tower_image_size(model.config.vision_config)
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))
    pad = model.generation_config.pad_token_id or 0
    prompts = [[1, 40, IMAGE_TOKEN_INDEX, 41, 42], [1, IMAGE_TOKEN_INDEX, 45]]
    batch = torch.tensor([[pad] * (5 - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (5 - len(p)) + [1] * len(p) for p in prompts])
    greedy = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "use_cache": True}
    expected = model.generate(batch, images=images, attention_mask=mask, **greedy)
    one = model.generate(batch[:1], images=images[:1], **greedy)
    model.set_attn_implementation(PER_SAMPLE)
    assert torch.equal(model.generate(batch, images=images, attention_mask=mask, **greedy), expected)
    assert torch.equal(model.generate(batch[:1], images=images[:1], **greedy), one)


def test_text_only_micro_batch(tiny_backbones):
    """A micro-batch without images (the vision modules still run once in training)."""
    model = build_model(tiny_backbones("llama", "clip"), "fusion_llama", "sdpa")
    samples = [s for s in make_samples(model.config.vocab_size) if not s["n_images"]]
    compare(model, samples)


def test_first_label_of_each_sample_is_ignored():
    samples = make_samples(50)
    for sample in samples:
        sample["labels"] = (
            sample["input_ids"].clone().masked_fill(sample["input_ids"] == IMAGE_TOKEN_INDEX, IGNORE_INDEX)
        )
    packed = PaddingFreeCollator()(samples)
    starts = (packed["position_ids"][0] == 0).nonzero().squeeze(1)
    assert starts.tolist() == [0, 13, 43, 63]
    assert (packed["labels"][0, starts] == IGNORE_INDEX).all()
    assert samples[1]["labels"][0] != IGNORE_INDEX  # the collator does not touch the samples


def test_expansion_restarts_positions_and_keeps_the_image_mask_aligned():
    embed = torch.nn.Embedding(50, 4)
    samples = make_samples(50)
    packed = PaddingFreeCollator()(samples)
    features = torch.randn(3, 5, 6)  # 3 images of 5 positions
    mm = merge_image_positions(
        packed["input_ids"], embed, features, labels=packed["labels"], position_ids=packed["position_ids"]
    )
    assert mm.attention_mask is None
    lengths = [13 + 4, 30, 20 + 8, 7]
    expected = torch.cat([torch.arange(n) for n in lengths])
    assert torch.equal(mm.position_ids[0], expected)
    # image positions: 1..5 of sample 0, then 1..10 of sample 2 (two images after its first token)
    image_rows = mm.image_mask[0].nonzero().squeeze(1).tolist()
    first_2 = lengths[0] + lengths[1]
    assert image_rows == [*range(1, 6), *range(first_2 + 1, first_2 + 11)]
    assert torch.equal(mm.vision_stream[0, image_rows], features.reshape(15, 6))
    assert (mm.vision_stream[0, ~mm.image_mask[0]] == 0).all()
    assert (mm.labels[0, mm.image_mask[0]] == IGNORE_INDEX).all()


def test_malformed_packed_rows_are_refused():
    with pytest.raises(ValueError, match=r"position_ids must be \[1, L\]"):
        packed_sample_ids(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="index 2 holds 3 after 1"):
        packed_sample_ids(torch.tensor([[0, 1, 3, 0]]))
    with pytest.raises(ValueError, match="has no padding"):
        merge_image_positions(
            torch.ones(1, 4, dtype=torch.long),
            torch.nn.Embedding(4, 2),
            None,
            attention_mask=torch.tensor([[1, 1, 0, 0]]),
            position_ids=torch.tensor([[0, 1, 2, 3]]),
        )
    assert restarting_positions(torch.tensor([0, 0, 1, 1, 1, 2])).tolist() == [0, 1, 0, 1, 2, 0]
