"""The fusion branch: split form == literal formula, initialisation, variants, layers, HD sizes."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import FusionLlamaConfig, LlavaLlamaConfig
from llava.model.builder import multimodal_config_from_backbones
from llava.model.fusion import FusionBranch, FusionLlamaAttention
from llava.train.arguments import parse_arguments, resolve_run
from llava.train.train import train
from tests import tolerances
from tests.model.model_helpers import tiny_fusion_config

VARIANTS = ["concat", "add", "gated", "mlp"]


def _randomized_branch(variant: str, **fields) -> FusionBranch:
    config = tiny_fusion_config(fusion_variant=variant, fusion_dropout=0.0, **fields)
    branch = FusionBranch(config, {"q": 32, "k": 16, "v": 16})
    with torch.no_grad():
        for param in branch.parameters():
            param.normal_(0.0, 0.5)
    return branch


def _split_tolerance(reference: torch.Tensor) -> float:
    """The split form and the literal formula add the same products in other orders: three
    contractions in series (W_t2v, then A or B, or the MLP's two layers; the gate's scaling), none
    longer than the hidden width, the concatenation's 2 d_v or the MLP's hidden width."""
    config = tiny_fusion_config()
    width = max(config.hidden_size, 2 * config.mm_hidden_size)
    return tolerances.forward(width, 3, reference.abs().max().item())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("norm", [False, True])
def test_split_form_equals_literal_concat_formula(variant, norm):
    branch = _randomized_branch(variant, vision_stream_norm=norm)
    x = torch.randn(3, 7, 32)  # [B, T, d_h]
    image_mask = torch.zeros(3, 7, dtype=torch.bool)
    image_mask[0, 2:5] = True
    image_mask[2, :] = True  # one row all image, row 1 all text
    vision = torch.randn(3, 7, 16) * image_mask.unsqueeze(-1)  # V_pad: zeros at text positions
    split = branch(x, vision, image_mask)
    reference = branch.reference_forward(x, vision, image_mask)
    assert split.shape == (3, 7, 64)
    assert (split - reference).abs().max().item() <= _split_tolerance(reference)
    assert split[1].abs().sum() > 0 and split[0, 2:5].abs().sum() > 0  # both halves contribute


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_only_split_form_matches_reference_in_eval_and_train(variant):
    branch = _randomized_branch(variant)
    x = torch.randn(2, 5, 32)
    expected = branch.reference_forward(x)
    tolerance = _split_tolerance(expected)
    assert (branch(x) - expected).abs().max().item() <= tolerance  # eval fast path
    branch.train()
    assert (branch(x) - expected).abs().max().item() <= tolerance  # training path (zero image rows)


def test_fresh_fusion_model_equals_plain_llama_on_text(build, tiny_checkpoints):
    llm, _ = tiny_checkpoints
    fusion = build("fusion_llama", randomize=False)
    plain = LlamaForCausalLM.from_pretrained(llm, attn_implementation="eager").eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        diff = (fusion(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max().item()
    assert diff == 0.0


def test_fresh_branch_is_zero_but_receives_gradients(build, images):
    model = build("fusion_llama", randomize=False).train()
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
    out = model(input_ids=ids, images=images[:1], labels=ids.masked_fill(ids < 0, -100))
    out.loss.backward()
    branch = model.fusion_branches()[0]
    assert branch.text_proj.grad.abs().sum() > 0 and branch.vision_proj.grad.abs().sum() > 0
    assert torch.all(branch.alpha == 1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_forward_and_backward(build, images, variant):
    model = build("fusion_llama", fusion_variant=variant, fusion_dropout=0.1).train()
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42], [1, 43, 44, 45, 46]])
    labels = ids.masked_fill(ids < 0, -100)
    loss = model(input_ids=ids, images=images[:1], labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.fusion_branches()[0].named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"{variant}: {name} got a zero gradient"


def test_multi_layer_fusion_and_target_subsets(build, images):
    model = build("fusion_llama", fusion_layer_ids=[0, 2], fusion_targets=["k", "q"])
    kinds = [type(layer.self_attn) for layer in model.model.layers]
    assert kinds == [FusionLlamaAttention, LlamaAttention, FusionLlamaAttention, LlamaAttention]
    assert model.config.fusion_targets == ["q", "k"]
    assert model.fusion_branches()[2].split_sizes == [64, 32]  # q: 4 heads x 16, k: 2 kv heads x 16
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41]])
    with torch.no_grad():
        with_fusion = model(input_ids=ids, images=images[:1]).logits
        for branch in model.fusion_branches().values():
            branch.alpha.zero_()
        without = model(input_ids=ids, images=images[:1]).logits
    assert (with_fusion - without).abs().max() > 1e-4  # both layers' branches change the output


def test_hd_sizes_consistent_in_config_layers_and_checkpoint(build, tmp_path):
    model = build("fusion_llama", mm_vision_select_layer=[-1, -2])
    tower_width = model.config.vision_config.hidden_size
    assert model.config.mm_hidden_size == 2 * tower_width
    branch = model.fusion_branches()[0]
    assert branch.text_to_vision.shape == (2 * tower_width, model.config.hidden_size)
    assert branch.vision_proj.shape[1] == 2 * tower_width
    features = model.get_image_features(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 16, 2 * tower_width)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert f.get_slice("model.layers.0.self_attn.fusion.vision_proj").get_shape()[1] == 2 * tower_width
    reloaded = FusionLlamaConfig.from_pretrained(tmp_path)
    assert reloaded.mm_hidden_size == 2 * tower_width and reloaded.mm_vision_select_layer == [-1, -2]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"fusion_hidden_dim": 128}, "only applies to the 'mlp'"),
        ({"fusion_targets": ["q", "o"]}, "fusion_targets"),
        ({"fusion_layer_ids": [5]}, "outside"),
        ({"mm_hidden_size": 1024}, "disagrees with the vision tower"),
        ({"mm_vision_select_layer": [-9]}, "out of range"),
        ({"fusion_dropout": 1.5}, "fusion_dropout"),
    ],
)
def test_config_rejects_inconsistent_settings(fields, message):
    with pytest.raises(Exception, match=message):
        tiny_fusion_config(**fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"fusion_variant": "foo"},
            r"fusion_variant='foo' is not one of the allowed values \['concat', 'add', 'gated', 'mlp', 'release_mlp', 'release_stable', 'published'\]",
        ),
        ({"mm_vision_select_feature": "cls"}, r"mm_vision_select_feature='cls' .* \['patch', 'cls_patch'\]"),
        ({"image_aspect_ratio": "crop"}, r"image_aspect_ratio='crop' .* \['pad', 'resize', 'square'\]"),
        ({"fusion_alpha": float("nan")}, "fusion_alpha must be a finite number, got nan"),
        ({"fusion_alpha": float("inf")}, "fusion_alpha must be a finite number, got inf"),
        ({"fusion_alpha": "1.0"}, "fusion_alpha must be a finite number, got '1.0'"),
        ({"fusion_dropout": float("nan")}, "fusion_dropout must be a finite number"),
        ({"fusion_dropout": -0.1}, r"fusion_dropout must be in \[0, 1\)"),
        (
            {"fusion_variant": "mlp", "fusion_hidden_dim": 0},
            "fusion_hidden_dim must be a positive int, got 0",
        ),
        ({"mm_hidden_size": -16}, "mm_hidden_size must be a positive int, got -16"),
        ({"vision_stream_norm": "False"}, "vision_stream_norm must be True or False, got 'False'"),
        ({"mm_vision_select_layer": [-1, True]}, "mm_vision_select_layer must be an int or a non-empty list"),
    ],
)
def test_config_rejects_values_outside_their_allowed_set(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_fusion_config(**fields)


def test_projector_type_outside_its_set_is_rejected():
    with pytest.raises(ValueError, match="unknown mm_projector_type 'mlp2x_relu'"):
        LlavaLlamaConfig(mm_projector_type="mlp2x_relu")


def test_training_entry_point_refuses_an_unknown_fusion_variant(tiny_checkpoints, tmp_path):
    """`--fusion_variant foo` used to train the concat branch; it now stops when the config is built,
    before any weight is loaded."""
    llm, vision = tiny_checkpoints
    flags = ["--model_name_or_path", llm, "--vision_tower", vision, "--model_type", "fusion_llama"]
    flags += ["--data_path", str(tmp_path / "data.json"), "--output_dir", str(tmp_path / "run")]
    flags += ["--fusion_variant", "foo", "--report_to", "none"]
    model_args, data_args, training_args = parse_arguments(flags)
    spec = resolve_run(model_args, data_args, training_args)
    with pytest.raises(ValueError, match="fusion_variant='foo' is not one of the allowed values"):
        multimodal_config_from_backbones(spec.model_type, llm, vision, **spec.config_fields)
    with pytest.raises(ValueError, match="fusion_variant='foo'"):
        train(model_args, data_args, training_args)


def test_mlp_variant_honours_fusion_hidden_dim():
    config = tiny_fusion_config(fusion_variant="mlp", fusion_hidden_dim=8)
    branch = FusionBranch(config, {"q": 32, "k": 16, "v": 16})
    assert branch.mlp_in_weight.shape == (3 * 8, 16)


@pytest.mark.parametrize("model_type", ["fusion_llama", "llava_llama"])
def test_eager_and_sdpa_attention_agree(build, images, model_type):
    ids = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42], [1, 43, 44, 45, 46]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    eager_model, sdpa_model = build(model_type, attn="eager"), build(model_type, attn="sdpa")
    with torch.no_grad():
        eager = eager_model(input_ids=ids, images=images[:1], attention_mask=mask)
        sdpa = sdpa_model(input_ids=ids, images=images[:1], attention_mask=mask)
        real = eager_model.prepare_multimodal_inputs(ids, images[:1], mask).attention_mask.bool()
    assert sdpa.logits.shape == eager.logits.shape and real.sum() == 20 + 3
    # SDPA's kernel adds the attention's products in another order than eager's matmuls; a row
    # holds the prompt's positions, the image's 16 in place of its placeholder
    tolerance = tolerances.model_forward(eager.logits[real], eager_model.config, tokens=ids.shape[1] + 15)
    assert (sdpa.logits[real] - eager.logits[real]).abs().max() <= tolerance
