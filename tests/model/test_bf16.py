"""Both models in bf16 (and fp16) on the CPU: forward, backward and generate against fp32, every
component (tower, vision stream, fusion branch, projector) in the model's dtype, no fp32 matmul and
no fp32 copy of the vision features, and the same under `load_pretrained_model(..., dtype=...)`.

Tolerances: bf16 keeps 8 significant bits (fp16 11): every contraction rounds its weights and
result, and the roundings' errors add up over the model's depth (`tolerances.low_precision`, on the
logits' root mean square); the loss, and the gradients' directions, follow from the same errors.
"""

from __future__ import annotations

import collections
import copy
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.dataset import DataCollatorForSupervisedDataset
from llava.data.packing import PaddingFreeCollator
from llava.model.builder import build_from_backbones, load_pretrained_model
from tests import tolerances
from tests.model.model_helpers import randomize_trainables
from tests.model.test_padding_free import attach_images, make_samples

IMG = IMAGE_TOKEN_INDEX
METHODS = ["fusion_llama", "llava_llama"]
# (LLM, tower): Llama + CLIP (the paper's) and a GQA family with q/k norm + SigLIP (no CLS token)
BACKBONES = [("llama", "clip"), ("qwen3", "siglip")]
# The loss's gradient in the logits (softmax minus one-hot) has Euclidean norm at most sqrt 2, so the
# loss is off by at most sqrt 2 times the logits' error (which has random signs across the vocabulary).
LOSS_PER_LOGIT_ERROR = math.sqrt(2)
MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution", "_convolution"}


def _batch(model) -> dict:
    """Two samples of different lengths (one right-padded), one image each, labels on the text."""
    ids = torch.tensor([[1, 5, IMG, 7, 8, 9, 10], [1, 5, 6, IMG, 8, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    side = model.get_vision_tower().config.image_size
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))
    labels = ids.masked_fill((ids == IMG) | (mask == 0), -100)
    return {"input_ids": ids, "attention_mask": mask, "images": images, "labels": labels}


def _models(tiny_backbones, method: str, llm: str, tower: str, dtype: torch.dtype, attn: str = "sdpa"):
    """The same randomly initialised model in fp32 and in `dtype` (a cast copy), eval mode.

    `method` (`fusion_llama` / `llava_llama`) picks the method; the family is the LLM checkpoint's.
    """
    fields = {"fusion_dropout": 0.0} if method.startswith("fusion") else {}
    reference, _ = build_from_backbones(
        method, *tiny_backbones(llm, tower), attn_implementation=attn, **fields
    )
    randomize_trainables(reference)
    return reference.eval(), copy.deepcopy(reference).to(dtype).eval()


class Float32Outputs(TorchDispatchMode):
    """Records the aten ops that produce fp32 floating tensors (op name, shape)."""

    def __init__(self):
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                self.seen[func.overloadpacket.__name__, tuple(tensor.shape)] += 1
        return out


def _error_and_tolerance(value, reference, mask, config, dtype) -> tuple[float, float]:
    """max |value - reference| over the real positions (`mask` `[B, T]`), and how far `dtype`
    logits can be from float32's there: `tolerances.low_precision` over the model of `config`."""
    keep = mask.bool()
    error = (value.float() - reference)[keep].abs().max().item()
    depth = tolerances.network(config)[1]
    return error, tolerances.low_precision(dtype, depth, reference[keep].pow(2).mean().sqrt().item())


def _expanded_mask(model, batch: dict) -> torch.Tensor:
    """The attention mask after the image placeholders are expanded: `[B, T]`."""
    return model.prepare_multimodal_inputs(
        batch["input_ids"], batch["images"], batch["attention_mask"]
    ).attention_mask


@pytest.mark.parametrize(("llm", "tower"), BACKBONES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_forward_agrees_with_fp32(tiny_backbones, method, llm, tower, dtype):
    reference, model = _models(tiny_backbones, method, llm, tower, dtype)
    batch = _batch(model)
    with torch.no_grad():
        expected = reference(**batch)
        got = model(**batch)
    assert got.logits.dtype == dtype
    mask = _expanded_mask(reference, batch)
    error, tolerance = _error_and_tolerance(got.logits, expected.logits, mask, reference.config, dtype)
    assert error <= tolerance, f"{method} {llm}+{tower} {dtype}: logits off by {error:.2e} > {tolerance:.2e}"
    assert abs(got.loss.item() - expected.loss.item()) <= LOSS_PER_LOGIT_ERROR * tolerance


@pytest.mark.parametrize(("llm", "tower"), BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_every_component_runs_in_bf16(tiny_backbones, method, llm, tower):
    """Tower output, vision stream, fusion terms / projector output and the decoder's hidden states
    are bf16; no matmul runs in fp32 and no fp32 tensor of the vision width exists (the library's
    RMSNorm, rotary and loss upcasts are fp32 by design and are the only fp32 tensors)."""
    _, model = _models(tiny_backbones, method, llm, tower, torch.bfloat16)
    batch = _batch(model)
    d_v = model.config.mm_hidden_size
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    features = model.get_image_features(batch["images"])
    assert features.dtype == torch.bfloat16 and features.shape[-1] == d_v
    mm = model.prepare_multimodal_inputs(batch["input_ids"], batch["images"], batch["attention_mask"])
    assert mm.inputs_embeds.dtype == torch.bfloat16
    if method.startswith("fusion"):
        assert mm.vision_stream.dtype == torch.bfloat16
        branch = next(iter(model.fusion_branches().values()))
        term = branch(mm.inputs_embeds, mm.vision_stream, mm.image_mask)
        assert term.dtype == torch.bfloat16
    else:
        assert model.model.mm_projector(features).dtype == torch.bfloat16
    model.train()
    with Float32Outputs() as recorded:
        model(**batch).loss.backward()
    fp32_matmuls = [key for key in recorded.seen if key[0] in MATMULS]
    # The check by width needs a vision width that no fp32-by-design tensor has (rotary, q/k norm).
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    head_dim = getattr(model.config, "head_dim", None) or head_dim
    vision_width = [key for key in recorded.seen if key[1] and key[1][-1] == d_v and d_v != head_dim]
    assert not fp32_matmuls, f"fp32 matmuls in a bf16 model: {fp32_matmuls}"
    assert not vision_width, f"fp32 tensors of the vision width {d_v}: {vision_width}"


@pytest.mark.parametrize(("llm", "tower"), BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_backward_agrees_with_fp32(tiny_backbones, method, llm, tower):
    """Gradients of the trained parts (fusion branch / projector) are bf16 and point where fp32's do."""
    reference, model = _models(tiny_backbones, method, llm, tower, torch.bfloat16)
    batch = _batch(model)
    grads = {}
    for name, m in (("fp32", reference), ("bf16", model)):
        m.train()
        m(**batch).loss.backward()
        grads[name] = {n: p.grad for n, p in m.named_parameters() if ".fusion." in n or "mm_projector" in n}
    assert grads["bf16"] and all(g.dtype == torch.bfloat16 for g in grads["bf16"].values())
    # Each bf16 gradient entry is off by a random error of standard deviation `sigma` times the
    # gradient's root mean square (`tolerances.low_precision` without its lambda, over the forward's
    # and the backward's contractions); over n entries the error's squared norm stays within
    # 1 + lambda sqrt(2 / n) of n sigma^2, and 1 - cosine is at most half the squared relative error.
    depth = 2 * tolerances.network(reference.config)[1]
    sigma = tolerances.low_precision(torch.bfloat16, depth, 1.0) / tolerances.LAMBDA
    for name, expected in grads["fp32"].items():
        got = grads["bf16"][name].float()
        if expected.abs().max() == 0:
            continue
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item()
        bound = 1 - sigma**2 * (1 + tolerances.LAMBDA * math.sqrt(2 / expected.numel())) / 2
        assert cosine >= bound, f"{name}: bf16 gradient at cosine {cosine:.5f} to fp32's, below {bound:.5f}"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_generate_with_and_without_cache(tiny_backbones, method, dtype):
    """Greedy generation in half precision: the KV-cached answers are the cache-free ones, and
    the first token (the clearest argmax) is fp32's."""
    reference, model = _models(tiny_backbones, method, "llama", "clip", dtype)
    batch = _batch(model)
    prompt = {k: batch[k] for k in ("input_ids", "attention_mask", "images")}
    greedy = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
    cached = model.generate(**prompt, **greedy)
    uncached = model.generate(**prompt, **greedy, use_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, 0], reference.generate(**prompt, **greedy)[:, 0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_load_pretrained_model_in_half_precision(tiny_model_path, dtype):
    """`load_pretrained_model(..., dtype=...)`: every parameter (tower included) in that dtype, and
    the logits those of the fp32 load within tolerance."""
    _, reference, _, _ = load_pretrained_model(tiny_model_path, device="cpu")
    _, model, _, _ = load_pretrained_model(tiny_model_path, device="cpu", dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model.get_vision_tower().dtype == dtype
    batch = _batch(model)
    with torch.no_grad():
        expected, got = reference(**batch).logits, model(**batch).logits
    assert got.dtype == dtype
    mask = _expanded_mask(reference, batch)
    error, tolerance = _error_and_tolerance(got, expected, mask, reference.config, dtype)
    assert error <= tolerance, f"{dtype}: logits off by {error:.2e} > {tolerance:.2e}"


@pytest.mark.parametrize("method", METHODS)
def test_padding_free_batch_in_bf16(tiny_backbones, method):
    """A padding-free micro-batch (images, text-only samples, two images in a sample) in bf16: bf16
    logits, a backward without dtype errors, and the padded batch's loss within bf16 tolerance."""
    _, model = _models(tiny_backbones, method, "llama", "clip", torch.bfloat16)
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, model.get_vision_tower().config.image_size)
    padded = DataCollatorForSupervisedDataset(pad_token_id=0)(samples)
    packed = PaddingFreeCollator()(samples)
    model.train()
    losses = {}
    for name, batch in (("padded", padded), ("packed", packed)):
        inputs = {k: v for k, v in batch.items() if k != "skipped_samples"}
        out = model(**inputs, use_cache=False)
        assert out.logits.dtype == torch.bfloat16
        out.loss.backward()
        losses[name] = out.loss.item()
    # The two share the bf16 weights; only their results' roundings differ, independently: two per
    # term between them, as many as `low_precision` counts between bf16 and float32.
    scale = out.logits.float().pow(2).mean().sqrt().item()  # the packed row: every position real
    tolerance = tolerances.low_precision(torch.bfloat16, tolerances.network(model.config)[1], scale)
    assert abs(losses["packed"] - losses["padded"]) <= LOSS_PER_LOGIT_ERROR * tolerance
