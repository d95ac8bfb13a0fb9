"""The published model's fusion layer (`fusion_variant="published"`): its split form against the
formula written out from the authors' code, its initialisation, its parameter names, KV-cached
decoding, gradients, padding-free batches on every LLM family. Its training run through the entry
point: tests/train/test_published_fusion_train.py."""

from __future__ import annotations

import math

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaConfig
from llava.model.builder import build_from_backbones
from llava.model.fusion import FusionLlamaAttention, fusion_attention_class
from llava.model.published_fusion import PublishedFusion, VisualRMSNorm
from llava.model.vision_tower import tower_image_size
from llava.tools.make_tiny_checkpoints import LLMS
from llava.train.recipe import lora_target_modules
from llava.train.train import seeded_init
from tests import tolerances
from tests.model.model_helpers import randomize_trainables, tiny_fusion_config
from tests.model.test_padding_free import attach_images, compare, make_samples

OUT = {"q": 32, "k": 16, "v": 16}
BUNDLE_NAMES = {
    f"{part}.{t}{suffix}"
    for t in "qkv"
    for part, suffix in (
        ("text_to_vision", ".weight"),
        ("output", ".weight"),
        ("visual_norm", ".weight"),
        ("scales", ""),
    )
}  # the names under `language_model.model.layers.L.self_attn.fusion.` in the authors' bundle
IMG = IMAGE_TOKEN_INDEX


def _randomized_layer(training: bool = False) -> PublishedFusion:
    """A layer with random weights, norm weights and scales (fresh ones are 1 and ~1e-4)."""
    layer = PublishedFusion(tiny_fusion_config(fusion_variant="published"), OUT).train(training)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return layer


def _inputs(batch=2, length=7, d_h=32, d_v=16):
    """x at every position; the vision stream at the image positions, zeros elsewhere (V_pad)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, d_h, generator=generator)
    vision = torch.randn(batch, length, d_v, generator=generator) * 30  # CLIP-like large features
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 1:3] = True
    return x, vision * mask.unsqueeze(-1), mask


def _formula(layer: PublishedFusion, x, vision, mask) -> torch.Tensor:
    """The authors' update, written out: per target t,
    s_t * W_concat_t . concat(m_text * (M_t x), m_vis * w_t * v / sqrt(mean(v^2) + 1e-6))."""
    m_text = (~mask).unsqueeze(-1).float()  # [B, T, 1]
    m_vis = mask.unsqueeze(-1).float()
    terms = []
    for t in layer.targets:
        mapper = layer.text_to_vision[t].weight  # [d_v, d_h]
        weight = layer.visual_norm[t].weight  # [d_v]
        w_concat = layer.output[t].weight  # [out, 2 d_v]
        scale = getattr(layer.scales, t)  # [1]
        normed = weight * vision * torch.rsqrt(vision.pow(2).mean(-1, keepdim=True) + 1e-6)
        joint = torch.cat([m_text * (x @ mapper.T), m_vis * normed], dim=-1)  # [B, T, 2 d_v]
        terms.append(scale * (joint @ w_concat.T))
    return torch.cat(terms, dim=-1)  # [B, T, total]


def _layer_tolerance(expected: torch.Tensor) -> float:
    """The split form and the formula add the same products in other orders (one half of the
    concatenation skipped instead of added as zeros, other blockings): three sums in series (the
    norm's mean of squares, the mapper, W_concat), none longer than the hidden width or 2 d_v."""
    return tolerances.forward(max(32, 2 * 16), 3, expected.abs().max().item())


def model_tolerance(model, reference: torch.Tensor, tokens: int) -> float:
    """Two float32 evaluations of the model in other summation orders: `tolerances.network`'s
    contractions plus one, the visual norm's mean of squares."""
    width, depth = tolerances.network(model.config, tokens=tokens)
    return tolerances.forward(width, depth + 1, reference.abs().max().item())


@pytest.mark.parametrize("training", [False, True])
def test_split_form_equals_the_formula(training):
    layer = _randomized_layer(training)
    x, vision, mask = _inputs()
    expected = _formula(layer, x, vision, mask)
    atol = _layer_tolerance(expected)
    torch.testing.assert_close(layer(x, vision, mask), expected, rtol=0, atol=atol)
    torch.testing.assert_close(layer.reference_forward(x, vision, mask), expected, rtol=0, atol=atol)
    text_only = _formula(layer, x, torch.zeros_like(vision), torch.zeros_like(mask))
    torch.testing.assert_close(layer(x), text_only, rtol=0, atol=_layer_tolerance(text_only))


def test_each_position_sees_only_its_own_modality():
    """Image positions ignore the hidden state there, text positions ignore the vision stream."""
    layer = _randomized_layer()
    x, vision, mask = _inputs()
    out = layer(x, vision, mask)
    moved = layer(x + 5.0 * mask.unsqueeze(-1), vision, mask)  # hidden state changed at image positions
    assert torch.equal(out, moved)
    assert not torch.allclose(out[mask], layer(x)[mask])  # the vision half replaces the text half there


def test_visual_norm_reduces_in_float32():
    """Float16 features of CLIP's size (|v| ~ 1e3) would overflow a float16 sum of squares."""
    norm = VisualRMSNorm(16).half()
    vision = (torch.randn(4, 16, generator=torch.Generator().manual_seed(1)) * 1000).half()
    out = norm(vision)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    v = vision.float()
    expected = (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6)).half()
    assert torch.equal(out, expected)


def test_parameters_are_the_bundles_with_no_bias():
    layer = PublishedFusion(tiny_fusion_config(fusion_variant="published"), OUT)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert set(shapes) == BUNDLE_NAMES
    for t, out in OUT.items():
        assert shapes[f"text_to_vision.{t}.weight"] == (16, 32)  # [d_v, d_h]
        assert shapes[f"output.{t}.weight"] == (out, 2 * 16)  # [d_t, 2 d_v]
        assert shapes[f"visual_norm.{t}.weight"] == (16,)
        assert shapes[f"scales.{t}"] == (
            1,
        )  # the bundle's [] as one element: ZeRO-3 partitions no 0-dim tensor
        assert layer.visual_norm[t].eps == 1e-6


def test_initialisation_statistics():
    """Normal draws: a sample standard deviation lands within `tolerances.sample_std(n)` of the
    distribution's (relative), a sample mean within lambda std / sqrt(n) of 0, for n draws."""
    config = FusionLlamaConfig(
        vocab_size=50,
        hidden_size=512,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        vision_config=dict(hidden_size=64, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        fusion_variant="published",
    )
    torch.manual_seed(0)
    layer = PublishedFusion(config, {"q": 512, "k": 512, "v": 512})
    d_v = config.mm_hidden_size
    for t in layer.targets:
        for draws, std in (
            (layer.text_to_vision[t].weight, 1 / math.sqrt(d_v)),
            (layer.output[t].weight, 1e-4),
        ):
            n = draws.numel()
            assert draws.std().item() == pytest.approx(std, rel=tolerances.sample_std(n)), t
            assert abs(draws.mean().item()) <= tolerances.LAMBDA * std / math.sqrt(n), t
        assert torch.equal(layer.visual_norm[t].weight, torch.ones(d_v))
        assert getattr(layer.scales, t).item() == 1.0
    assert config.fusion_dropout == 0.0


def test_initial_draws_are_float32_draws_cast():
    """Re-initialised in bfloat16 (as in a bfloat16 model's init pass), the layer holds the float32
    draws of the same seed, rounded once."""
    config = tiny_fusion_config(fusion_variant="published")
    torch.manual_seed(4)
    full = dict(PublishedFusion(config, OUT).named_parameters())
    half = PublishedFusion(config, OUT).to(torch.bfloat16)
    torch.manual_seed(4)
    for module in half.modules():  # the constructor's order: mappers, norms, outputs, scales
        if module is not half and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for name, param in half.named_parameters():
        assert param.dtype == torch.bfloat16
        assert torch.equal(param, full[name].to(torch.bfloat16)), name


def test_seeded_init_restores_the_initialisation(build):
    """Training initialises the parameters the backbones lack through the model's `_init_weights`."""
    model = build("fusion_llama", randomize=False, fusion_variant="published")
    names = [n for n, _ in model.named_parameters() if ".fusion." in n]
    assert {n.split(".fusion.")[1] for n in names} == BUNDLE_NAMES
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names:
                param.fill_(7.0)
    seeded_init(model, names, seed=3)
    fusion = model.model.layers[0].self_attn.fusion
    d_v = model.config.mm_hidden_size
    for t in fusion.targets:
        mapper, output = fusion.text_to_vision[t].weight, fusion.output[t].weight
        assert mapper.std().item() == pytest.approx(
            1 / math.sqrt(d_v), rel=tolerances.sample_std(mapper.numel())
        )
        assert output.std().item() == pytest.approx(1e-4, rel=tolerances.sample_std(output.numel()))
        assert torch.equal(fusion.visual_norm[t].weight, torch.ones(d_v))
        assert getattr(fusion.scales, t).item() == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fusion_dropout": 0.1}, "fusion_dropout=0.1 has no effect on the published"),
        ({"fusion_hidden_dim": 128}, "fusion_hidden_dim=128 has no effect"),
        ({"vision_stream_norm": True}, "vision_stream_norm=True has no effect"),
    ],
)
def test_refuses_settings_it_would_ignore(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_fusion_config(fusion_variant="published", **fields)


@pytest.mark.parametrize("case", ["one_image", "two_images", "text_only"])
def test_kv_cached_decoding_equals_recompute(build, images, case):
    model = build("fusion_llama", fusion_variant="published")
    ids, imgs = {
        "one_image": (torch.tensor([[1, 40, IMG, 41, 42, 43]]), images[:1]),
        "two_images": (torch.tensor([[1, 40, IMG, 41, IMG, 42, 43]]), images[:2]),
        "text_only": (torch.tensor([[1, 40, 41, 42, 43]]), None),
    }[case]
    out = model.generate(
        ids, images=imgs, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    tokens = out.sequences  # [1, n]: the new tokens only
    assert tokens.shape[1] >= 1
    for step, cached in enumerate(out.logits):  # [1, V] each
        with torch.no_grad():
            recomputed = model(input_ids=torch.cat([ids, tokens[:, :step]], dim=1), images=imgs).logits
        length = recomputed.shape[1]
        recomputed = recomputed[:, -1]  # [1, V]
        assert torch.equal(recomputed.argmax(-1), tokens[:, step]), step
        diff = (cached - recomputed).abs().max().item()
        assert diff <= model_tolerance(model, recomputed, length), (step, diff)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gradients_reach_every_fusion_parameter(build, images, attn):
    model = build("fusion_llama", attn=attn, fusion_variant="published").train()
    with_image = torch.tensor([[1, 40, IMG, 41, 42]])
    model(input_ids=with_image, images=images[:1], labels=with_image.clamp(min=0)).loss.backward()
    fusion = {n: p for n, p in model.named_parameters() if ".fusion." in n}
    assert len(fusion) == len(BUNDLE_NAMES)
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in fusion.values()), [
        n for n, p in fusion.items() if p.grad is None or not p.grad.abs().max() > 0
    ]
    for t in "qkv":  # both halves of W_concat learn: A at the text positions, B at the image ones
        grad = fusion[f"model.layers.0.self_attn.fusion.output.{t}.weight"].grad
        d_v = grad.shape[1] // 2
        assert grad[:, :d_v].abs().max() > 0 and grad[:, d_v:].abs().max() > 0
    model.zero_grad()
    text = torch.tensor([[1, 40, 41]])
    model(input_ids=text, images=None, labels=text).loss.backward()
    assert all(p.grad is not None for p in fusion.values())  # in the graph without images (ZeRO-3)


@pytest.mark.parametrize("llm", list(LLMS))
def test_built_into_every_family(tiny_backbones, llm):
    llm_path, vision = tiny_backbones(llm, "clip")
    model, report = build_from_backbones("fusion_llama", llm_path, vision, fusion_variant="published")
    attention = model.model.layers[0].self_attn
    assert type(attention) is fusion_attention_class(model.config.family_model_type)
    assert isinstance(attention.fusion, PublishedFusion)
    assert not any(hasattr(layer.self_attn, "fusion") for layer in model.model.layers[1:])
    assert {n.split(".fusion.")[1] for n in report.missing} == BUNDLE_NAMES
    assert lora_target_modules(model, []) and not [
        n for n in lora_target_modules(model, []) if ".fusion." in n
    ]


def _padding_free_model(backbones, attn: str):
    llm, vision = backbones
    model, _ = build_from_backbones(
        "fusion_llama", llm, vision, attn_implementation=attn, fusion_variant="published"
    )
    randomize_trainables(model)
    model.config.use_cache = False
    return model.train()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_padding_free_equals_padded(tiny_backbones, attn):
    model = _padding_free_model(tiny_backbones("llama", "clip"), attn)
    assert isinstance(model.model.layers[0].self_attn, FusionLlamaAttention)
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    compare(model, samples)


@pytest.mark.parametrize(
    ("llm", "tower"), [(llm, "clip") for llm in LLMS if llm != "llama"] + [("qwen2", "siglip")]
)
def test_padding_free_equals_padded_every_family(tiny_backbones, llm, tower):
    model = _padding_free_model(tiny_backbones(llm, tower), "sdpa")
    samples = make_samples(model.config.vocab_size)
    attach_images(samples, tower_image_size(model.config.vision_config))
    compare(model, samples)
