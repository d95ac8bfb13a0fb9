"""Both models on every LLM family and tower: construction from plain checkpoints, the fusion
term where the paper puts it, save/load, cached generation, and what the tower gives."""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle

import pytest
import torch
from torch import nn
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    Siglip2VisionModel,
    SiglipConfig,
    SiglipModel,
)

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.eval import run_llava
from llava.extras import MissingExtraError
from llava.mm_utils import expand2square, load_image, process_images, tokenize_conversation
from llava.model.builder import build_from_backbones, load_pretrained_model
from llava.model.families import FAMILIES
from llava.model.fusion import FusionAttentionMixin
from llava.model.uncached_generation import generate_without_cache
from llava.model.vision_tower import load_image_processor, to_naflex_patches
from llava.tools.export_llava_hf import export_llava_hf
from llava.tools.make_tiny_checkpoints import LLMS
from tests import tolerances
from tests.model.model_helpers import randomize_trainables

IMG = IMAGE_TOKEN_INDEX
GREEDY = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
METHODS = ["fusion_llama", "llava_llama"]
# tiny LLM -> the family (model_type) it must be read as
FAMILY_OF = {
    "llama": "llama",
    "llama3": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
}
# every family with every tower
MATRIX = [(llm, tower) for llm in LLMS for tower in ("clip", "siglip", "siglip2")]


def _build(tiny_backbones, llm, tower, method, randomize=True, **fields):
    model, report = build_from_backbones(
        method, *tiny_backbones(llm, tower), attn_implementation="eager", **fields
    )
    if randomize:
        randomize_trainables(model)
    return model.eval(), report


def _pixels(n: int) -> torch.Tensor:
    """`n` random normalised images at the tiny towers' 32 px."""
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_every_family_of_the_registry_has_a_tiny_checkpoint():
    assert set(FAMILY_OF.values()) == set(FAMILIES)


@pytest.mark.parametrize("llm", list(LLMS))
@pytest.mark.parametrize("method", METHODS)
def test_plain_checkpoint_loads_with_exactly_the_new_parameters_missing(tiny_backbones, llm, method):
    model, report = _build(tiny_backbones, llm, "clip", method, randomize=False)
    family = FAMILY_OF[llm]
    assert model.config.model_type == f"{method.split('_')[0]}_{family}"
    assert isinstance(model, FAMILIES[family].causal_lm_cls)
    new = sorted(
        name
        for name, _ in model.named_parameters()
        if ".fusion." in name or name.startswith("model.mm_projector.")
    )
    assert new and report.missing == new
    assert report.unexpected == []
    plain = AutoModelForCausalLM.from_pretrained(tiny_backbones(llm, "clip")[0])
    ours = {k for k in model.state_dict() if ".fusion." not in k and "mm_projector" not in k}
    ours = {k for k in ours if not k.startswith("model.vision_tower.")}
    assert ours == set(plain.state_dict())  # the family's own keys, none renamed


@pytest.mark.parametrize("llm", list(LLMS))
def test_fresh_fusion_model_gives_the_base_llms_text_logits(tiny_backbones, llm):
    model, _ = _build(tiny_backbones, llm, "clip", "fusion_llama", randomize=False)
    plain = AutoModelForCausalLM.from_pretrained(
        tiny_backbones(llm, "clip")[0], attn_implementation="eager"
    ).eval()
    ids = torch.tensor([[5, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        ours, theirs = model(input_ids=ids).logits, plain(input_ids=ids).logits
    # the zero-initialised branch adds exact zeros to the same operations on the same values
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


class _PlusDelta(nn.Module):
    """A projection that adds a fixed term to the library module's output (the reference)."""

    def __init__(self, base: nn.Linear, delta: torch.Tensor):
        super().__init__()
        self.base, self.delta = base, delta

    def forward(self, x):
        return self.base(x) + self.delta


@pytest.mark.parametrize("llm", ["llama", "mistral", "qwen2", "qwen3", "gemma"])
def test_fusion_term_is_added_to_the_projection_outputs(tiny_backbones, llm):
    """The fusion attention equals the library's own attention whose q/k/v projections output
    `W x + term`: for Qwen3 the term enters before the q/k RMSNorm, as the paper adds it to the
    projection outputs."""
    model, _ = _build(tiny_backbones, llm, "clip", "fusion_llama")
    attention = model.model.layers[0].self_attn
    assert isinstance(attention, FusionAttentionMixin)
    hidden = torch.randn(2, 7, model.config.hidden_size)
    vision = torch.randn(2, 7, model.config.mm_hidden_size)
    image_mask = torch.zeros(2, 7, dtype=torch.bool)
    image_mask[:, 2:5] = True
    position_ids = torch.arange(7).expand(2, -1)
    rotary = model.model.rotary_emb(hidden, position_ids)
    mask = torch.full((7, 7), float("-inf")).triu(1).expand(2, 1, 7, 7)
    with torch.no_grad():
        ours, _ = attention(hidden, rotary, mask, vision_stream=vision, image_mask=image_mask)
        terms = attention.fusion(hidden, vision, image_mask).split(attention.fusion.split_sizes, dim=-1)
        reference = FAMILIES[FAMILY_OF[llm]].attention_cls(model.config, 0).eval()
        reference.load_state_dict(
            {k: v for k, v in attention.state_dict().items() if not k.startswith("fusion.")}
        )
        for target, term in zip(attention.fusion.targets, terms, strict=True):
            name = f"{target}_proj"
            setattr(reference, name, _PlusDelta(getattr(reference, name), term))
        theirs, _ = reference(hidden, rotary, mask)
    assert terms[0].abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # the same operations in the same order


@pytest.mark.parametrize("llm, tower", MATRIX)
@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_give_identical_logits(tiny_backbones, llm, tower, method, tmp_path):
    model, _ = _build(tiny_backbones, llm, tower, method)
    llm_path, vision_path = tiny_backbones(llm, tower)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(llm_path).save_pretrained(tmp_path)
    load_image_processor(vision_path).save_pretrained(tmp_path)
    tokenizer, loaded, processor, _ = load_pretrained_model(
        str(tmp_path), device="cpu", attn_implementation="eager"
    )
    assert type(loaded) is type(model) and tokenizer.pad_token is not None
    assert type(processor) is type(load_image_processor(vision_path))
    ids = torch.tensor([[5, 40, IMG, 41, 42]])
    pixels = _pixels(1)
    with torch.no_grad():
        before = model(input_ids=ids, images=pixels).logits
        after = loaded.eval()(input_ids=ids, images=pixels).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("llm, tower", MATRIX)
@pytest.mark.parametrize("method", METHODS)
def test_cached_generation_equals_full_recompute(tiny_backbones, llm, tower, method):
    """Batch of one and a left-padded batch (two prompts of other lengths, one text-only)."""
    model, _ = _build(tiny_backbones, llm, tower, method)
    pixels = _pixels(2)
    one = torch.tensor([[5, 40, IMG, 41, 42, 43]])
    cached = model.generate(one, images=pixels[:1], **GREEDY)
    assert torch.equal(cached, generate_without_cache(model, one, pixels[:1], None, max_new_tokens=6))
    assert torch.equal(cached, model.generate(one, images=pixels[:1], use_cache=False, **GREEDY))
    pad = 0
    batch = torch.tensor(
        [[5, 40, IMG, 41, 42, 43, 44], [pad, pad, 5, 40, 41, 42, 43], [pad, 5, IMG, 43, 44, 45, 46]]
    )
    attention_mask = (torch.arange(7) >= torch.tensor([[0], [2], [1]])).long()
    images = pixels[[0, 1]]
    batched = model.generate(batch, images=images, attention_mask=attention_mask, **GREEDY)
    recomputed = generate_without_cache(model, batch, images, attention_mask, max_new_tokens=6)
    assert torch.equal(batched, recomputed)
    alone = model.generate(batch[:1], images=images[:1], **GREEDY)
    assert torch.equal(batched[:1], alone)


def _tower_hidden_states(tower_module, pixels: torch.Tensor, tower: str):
    """The library model's own hidden states for `pixels` (NaFlex: its processor's inputs)."""
    if tower != "siglip2":
        return tower_module(pixels, output_hidden_states=True).hidden_states
    n = pixels.shape[0]
    patches = to_naflex_patches(pixels, 8)
    mask, shapes = torch.ones(n, 16, dtype=torch.long), torch.tensor([[4, 4]] * n)
    return tower_module(
        pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes, output_hidden_states=True
    ).hidden_states


@pytest.mark.parametrize("tower", ["clip", "siglip", "siglip2"])
def test_tower_width_positions_and_layer_selection(tiny_backbones, tower):
    """d_v = width x selected layers ("-1,-2": 2 x 32); SigLIP has no CLS, so every position is a patch."""
    model, _ = _build(tiny_backbones, "qwen2", tower, "fusion_llama", mm_vision_select_layer=[-1, -2])
    config = model.config
    assert config.mm_hidden_size == 64 and config.num_image_tokens == 16
    pixels = _pixels(2)
    features = model.get_image_features(pixels)
    assert features.shape == (2, 16, 64)
    hidden = _tower_hidden_states(model.get_vision_tower().vision_tower, pixels, tower)
    offset = 1 if tower == "clip" else 0
    torch.testing.assert_close(features[..., :32], hidden[-1][:, offset:], rtol=0, atol=0)
    torch.testing.assert_close(features[..., 32:], hidden[-2][:, offset:], rtol=0, atol=0)


def test_naflex_tower_at_its_square_grid_equals_the_naflex_processor_and_model(tiny_backbones, image_folder):
    """On a square image the fixed-size processor + patching give the NaFlex processor's inputs
    exactly, and the tower's features are the library model's on them."""
    model, _ = _build(tiny_backbones, "llama", "siglip2", "llava_llama")
    vision_path = tiny_backbones("llama", "siglip2")[1]
    processor = load_image_processor(vision_path)
    image = expand2square(load_image(image_folder / "img2.png"), (127, 127, 127))
    pixels = process_images([image], processor, "square")  # [1, 3, 32, 32]
    naflex = AutoImageProcessor.from_pretrained(vision_path)(images=[image], return_tensors="pt")
    assert (
        torch.equal(naflex["spatial_shapes"], torch.tensor([[4, 4]])) and naflex["pixel_attention_mask"].all()
    )
    # the same rescaling and normalisation of the same pixels, rearranged: the same values
    torch.testing.assert_close(to_naflex_patches(pixels, 8), naflex["pixel_values"], rtol=0, atol=0)
    tower = Siglip2VisionModel.from_pretrained(vision_path).eval()
    with torch.no_grad():
        theirs = tower(**naflex, output_hidden_states=True).hidden_states[-2]
    # the fixed-size tower embeds patches with a convolution, the NaFlex model with a linear layer
    atol = tolerances.model_forward(theirs, model.config.vision_config)
    torch.testing.assert_close(model.get_image_features(pixels), theirs, rtol=0, atol=atol)


def test_a_bare_open_clip_folder_is_refused_naming_its_prefix(tiny_backbones, tmp_path):
    """OpenCLIP towers are named `local-dir:<folder>` (tests/model/test_open_clip_tower.py)."""
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(ValueError, match=f"OpenCLIP's format .* name it local-dir:{tmp_path}"):
        build_from_backbones("fusion_llama", tiny_backbones("llama", "clip")[0], str(tmp_path))


def test_an_open_clip_tower_without_open_clip_names_the_extra(tiny_backbones, tmp_path):
    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed (tests/model/test_open_clip_tower.py runs its towers)")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(MissingExtraError, match=r"needs the openclip extra: pip install -e '\.\[openclip\]'"):
        build_from_backbones("fusion_llama", tiny_backbones("llama", "clip")[0], f"local-dir:{tmp_path}")


def test_siglip_refuses_cls_patch(tiny_backbones):
    with pytest.raises(ValueError, match="needs a CLS token, and a SigLIP tower has none"):
        build_from_backbones(
            "llava_llama", *tiny_backbones("llama", "siglip"), mm_vision_select_feature="cls_patch"
        )


def test_unknown_family_is_named(tiny_backbones, tmp_path):
    llm, vision = tiny_backbones("llama", "clip")
    config = AutoModelForCausalLM.from_pretrained(llm).config.to_dict()
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'gpt2' is not a supported LLM family"):
        build_from_backbones("fusion_llama", str(tmp_path), vision)


@pytest.mark.parametrize("conv_mode", ["qwen_2", "chat_template"])
def test_run_llava_answers_from_a_qwen2_siglip_checkpoint(
    tiny_backbones, tmp_path, image_folder, conv_mode, caplog
):
    """LLaVA's `run_llava` CLI on a saved Qwen2 + SigLIP checkpoint: the prompt is the template's
    (logged at debug level, which needs the tokenizer for `chat_template`), the answer the model's
    own greedy one on the same ids and pixels."""
    model, _ = _build(tiny_backbones, "qwen2", "siglip", "fusion_llama")
    llm_path, vision_path = tiny_backbones("qwen2", "siglip")
    model.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    tokenizer.save_pretrained(tmp_path)
    processor = load_image_processor(vision_path)
    processor.save_pretrained(tmp_path)
    image = image_folder / "img0.png"
    argv = ["--model-path", str(tmp_path), "--image-file", str(image), "--query", "What is shown?"]
    argv += ["--conv-mode", conv_mode, "--temperature", "0", "--max_new_tokens", "5", "--device", "cpu"]
    with caplog.at_level(logging.DEBUG, logger="llava.eval.run_llava"):
        answer = run_llava.main(argv)
    conv = get_conv_template(conv_mode)
    conv.append_message("user", "<image>\nWhat is shown?")
    conv.append_message("assistant", None)
    prompts = [record.args[0] for record in caplog.records if record.msg == "prompt: %r"]
    assert prompts == [conv.get_prompt(tokenizer)]
    assert prompts[0].endswith("<|im_start|>user\n<image>\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n")
    ids, _ = tokenize_conversation(conv, tokenizer)
    pixels = process_images([load_image(image)], processor, model.config.image_aspect_ratio)
    expected = model.generate(torch.tensor([ids]), images=pixels, max_new_tokens=5, do_sample=False)
    assert answer == tokenizer.decode(expected[0], skip_special_tokens=True).strip()


@pytest.mark.parametrize(
    ("llm", "tower", "message"),
    [("qwen2", "clip", "llava_qwen2 checkpoint"), ("llama", "siglip", "a siglip_vision_model tower")],
)
def test_llava_hf_export_covers_llama_with_clip_only(tiny_backbones, tmp_path, llm, tower, message):
    """Never a Qwen2 LLM written as a Llama text config, nor a SigLIP tower losing a patch to
    llava-hf's CLS-dropping `default` feature strategy."""
    model, _ = _build(tiny_backbones, llm, tower, "llava_llama")
    llm_path, vision_path = tiny_backbones(llm, tower)
    model.save_pretrained(tmp_path / "ckpt")
    AutoTokenizer.from_pretrained(llm_path).save_pretrained(tmp_path / "ckpt")
    load_image_processor(vision_path).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=message):
        export_llava_hf(str(tmp_path / "ckpt"), tmp_path / "hf")


@pytest.mark.parametrize("llm", ["qwen2", "qwen3", "mistral"])
def test_generated_classes_pickle_by_name(tiny_backbones, llm):
    """The generated config and model classes are importable by name, so configs and models
    pickle (data-loader workers, deepcopies of pickled state) as the library's own do."""
    model, _ = _build(tiny_backbones, llm, "siglip", "fusion_llama")
    config = pickle.loads(pickle.dumps(model.config))
    assert type(config) is type(model.config) and config.to_dict() == model.config.to_dict()
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is type(model) and type(clone.model.layers[0].self_attn) is type(
        model.model.layers[0].self_attn
    )


@pytest.mark.parametrize("llm", list(LLMS))
def test_eager_and_sdpa_attention_agree(tiny_backbones, llm):
    """The family's attention interface (with its sliding window) runs the fusion layers alike
    under eager and SDPA, on a padded batch with an image."""
    backbones = tiny_backbones(llm, "siglip")
    eager, _ = _build(tiny_backbones, llm, "siglip", "fusion_llama")
    sdpa, _ = build_from_backbones("fusion_llama", *backbones, attn_implementation="sdpa")
    randomize_trainables(sdpa)
    ids = torch.tensor([[5, 40, IMG, 41, 42, 43, 44, 45, 46, 47], [0, 0, 5, 43, 44, 45, 46, 47, 48, 49]])
    mask = torch.tensor([[1] * 10, [0, 0] + [1] * 8])
    with torch.no_grad():
        theirs = sdpa.eval()(input_ids=ids, images=_pixels(1), attention_mask=mask).logits
        ours = eager(input_ids=ids, images=_pixels(1), attention_mask=mask).logits
        real = eager.prepare_multimodal_inputs(ids, _pixels(1), mask).attention_mask.bool()
    assert real.sum() == 25 + 8  # Mistral's 24-position window is exceeded
    # SDPA's kernel adds the attention's products in another order than eager's matmuls; a row
    # holds the prompt's positions, the image's 16 in place of its placeholder
    atol = tolerances.model_forward(ours[real], eager.config, tokens=ids.shape[1] + 15)
    torch.testing.assert_close(theirs[real], ours[real], rtol=0, atol=atol)


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_full_image_text_checkpoint_serves_as_the_tower(tiny_backbones, tmp_path, tower):
    """`google/siglip-so400m-patch14-384` and `openai/clip-vit-large-patch14-336` are full
    image-text checkpoints: their vision half is the tower, with its weights."""
    llm, vision = tiny_backbones("qwen2", tower)
    vision_model = AutoModel.from_pretrained(vision)
    text = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text["num_attention_heads"] = 4
    full_cls = CLIPModel if tower == "clip" else SiglipModel
    config_cls = CLIPConfig if tower == "clip" else SiglipConfig
    full = full_cls(config_cls(text_config=text, vision_config=vision_model.config.to_dict()))
    full.vision_model.load_state_dict(vision_model.state_dict())
    full.save_pretrained(tmp_path)
    model, report = build_from_backbones("llava_llama", llm, str(tmp_path))
    assert report.missing == sorted(n for n, _ in model.named_parameters() if "mm_projector" in n)
    assert model.config.vision_config.model_type == vision_model.config.model_type
    pixels = _pixels(2)
    with torch.no_grad():
        expected = vision_model(pixels, output_hidden_states=True).hidden_states[-2]
    offset = 1 if tower == "clip" else 0
    torch.testing.assert_close(model.get_image_features(pixels), expected[:, offset:], rtol=0, atol=0)
