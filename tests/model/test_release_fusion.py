"""The public release's two fusion layers: formulas, initialisation, config rules, and the
library's generate with the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.release_fusion import ReleaseFusion
from llava.train.train import seeded_init
from tests import tolerances
from tests.model.model_helpers import tiny_fusion_config

RELEASE = ["release_mlp", "release_stable"]
OUT = {"q": 32, "k": 16, "v": 16}


def _inputs(batch=2, length=7, d_h=32, d_v=16):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, length, d_h, generator=generator)
    vision = torch.randn(batch, length, d_v, generator=generator)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 1:3] = True
    return x, vision * mask.unsqueeze(-1), mask


def _tolerance(expected: torch.Tensor) -> float:
    """The layer and the formula written out add the same products in other orders (other row
    blockings, a matrix times a vector for a one-row linear): two contractions in series, none
    longer than the hidden width or the widest target."""
    width = max(tiny_fusion_config().hidden_size, *OUT.values())
    return tolerances.forward(width, 2, expected.abs().max().item())


@pytest.mark.parametrize("variant", RELEASE)
@pytest.mark.parametrize("training", [False, True])
def test_split_form_equals_the_release_formula(variant, training):
    layer = ReleaseFusion(tiny_fusion_config(fusion_variant=variant), OUT).train(training)
    x, vision, mask = _inputs()
    expected = layer.reference_forward(x, vision, mask)  # [B, T, 64]
    torch.testing.assert_close(layer(x, vision, mask), expected, rtol=0, atol=_tolerance(expected))
    text_only = layer.reference_forward(x)
    torch.testing.assert_close(layer(x), text_only, rtol=0, atol=_tolerance(text_only))


def test_release_mlp_gives_text_positions_its_constant():
    layer = ReleaseFusion(tiny_fusion_config(fusion_variant="release_mlp", fusion_alpha=0.7), OUT).eval()
    x, vision, mask = _inputs()
    out = layer(x, vision, mask)
    q = layer.branches["q"]
    constant = 0.7 * (q.projection_2.weight @ F.gelu(q.projection_1.bias) + q.projection_2.bias)  # [32]
    text = out[~mask][:, :32]  # every text position, the q columns
    torch.testing.assert_close(text, constant.expand_as(text), rtol=0, atol=_tolerance(constant))
    assert not torch.allclose(out[mask][:, :32], constant.expand(int(mask.sum()), -1))


def test_release_stable_text_half_is_unmasked_and_vision_half_is_normed():
    layer = ReleaseFusion(tiny_fusion_config(fusion_variant="release_stable"), OUT).eval()
    x, vision, mask = _inputs()
    v = layer.branches["v"]
    out = layer(x, vision, mask)[..., 48:]  # the v columns
    rms = vision * torch.rsqrt(vision.pow(2).mean(-1, keepdim=True) + 1e-6)  # RMSNorm(0) = 0 at text
    expected = v.alpha * ((x @ v.up_A) @ v.text_down + rms @ v.vision_down)
    torch.testing.assert_close(out, expected, rtol=0, atol=_tolerance(expected))


def test_initialisation_is_the_releases():
    torch.manual_seed(0)
    wide = tiny_fusion_config(fusion_variant="release_mlp", fusion_alpha=0.5)
    mlp = ReleaseFusion(wide, {"q": 512, "k": 512, "v": 512})
    first = mlp.branches["q"].projection_1  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1 / math.sqrt(first.in_features)
    assert first.weight.abs().max() <= bound and first.bias.abs().max() <= bound
    uniform = tolerances.sample_std(first.weight.numel(), kurtosis=9 / 5)  # a seeded draw's spread
    assert first.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=uniform)
    assert all(branch.alpha.item() == 0.5 for branch in mlp.branches.values())
    assert mlp.branches["q"].alpha.shape == ()  # one scalar per target, as the release saves it

    stable = ReleaseFusion(
        tiny_fusion_config(fusion_variant="release_stable"), {"q": 512, "k": 512, "v": 512}
    )
    branch = stable.branches["k"]
    for name, std in (("up_A", 1 / math.sqrt(16)), ("text_down", 0.01), ("vision_down", 0.01)):
        draws = getattr(branch, name)  # normal draws: their std within a seeded sample's spread of it
        assert draws.std().item() == pytest.approx(std, rel=tolerances.sample_std(draws.numel())), name
    assert torch.equal(branch.vision_norm.weight, torch.ones(16))


@pytest.mark.parametrize("variant", RELEASE)
def test_seeded_init_restores_the_releases_initialisation(build, variant):
    """Training initialises the parameters the backbones lack through the model's own
    `_init_weights`: the release's Linears must keep PyTorch's default, not N(0, 0.02)."""
    model = build("fusion_llama", randomize=False, fusion_variant=variant)
    names = [n for n, _ in model.named_parameters() if ".fusion." in n]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names:
                param.fill_(7.0)
    seeded_init(model, names, seed=3)
    branch = model.model.layers[0].self_attn.fusion.branches["q"]
    assert branch.alpha.item() == 1.0
    if variant == "release_mlp":
        weight = branch.projection_1.weight
        assert weight.abs().max() <= 1 / math.sqrt(weight.shape[1])
        assert weight.std().item() > 0.05  # not transformers' N(0, 0.02)
    else:
        assert torch.equal(branch.vision_norm.weight, torch.ones_like(branch.vision_norm.weight))
        assert branch.text_down.abs().max() < 0.1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fusion_dropout": 0.1}, "fusion_dropout=0.1 has no effect on the release's"),
        ({"fusion_hidden_dim": 128}, "fusion_hidden_dim=128 has no effect"),
        ({"vision_stream_norm": True}, "vision_stream_norm=True has no effect"),
    ],
)
@pytest.mark.parametrize("variant", RELEASE)
def test_release_layers_refuse_settings_they_ignore(variant, fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_fusion_config(fusion_variant=variant, **fields)


def test_dropout_defaults_to_the_variants_own():
    assert tiny_fusion_config(fusion_variant="release_mlp").fusion_dropout == 0.0
    assert tiny_fusion_config(fusion_variant="concat").fusion_dropout == 0.1


@pytest.mark.parametrize("variant", RELEASE)
def test_generate_with_the_kv_cache_equals_recompute(build, images, variant):
    model = build("fusion_llama", fusion_variant=variant)
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43], [3, 1, 44, IMAGE_TOKEN_INDEX, 45, 46]])
    mask = torch.tensor([[1] * 6, [0] + [1] * 5])
    greedy = {"do_sample": False, "max_new_tokens": 6, "pad_token_id": 3}
    cached = model.generate(ids, images=images[:2], attention_mask=mask, use_cache=True, **greedy)
    uncached = model.generate(ids, images=images[:2], attention_mask=mask, use_cache=False, **greedy)
    assert torch.equal(cached, uncached)
    alone = model.generate(ids[1:, 1:], images=images[1:2], use_cache=True, **greedy)
    assert torch.equal(cached[1:], alone)


@pytest.mark.parametrize("variant", RELEASE)
def test_every_parameter_gets_a_gradient_with_and_without_images(build, images, variant):
    model = build("fusion_llama", fusion_variant=variant).train()
    for ids, imgs in (
        [torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42]]), images[:1]],
        [torch.tensor([[1, 40, 41]]), None],
    ):
        model.zero_grad()
        model(input_ids=ids, images=imgs, labels=ids.clamp(min=0)).loss.backward()
        fusion = {n: p for n, p in model.named_parameters() if ".fusion." in n}
        assert fusion and all(p.grad is not None for p in fusion.values())
