"""OpenCLIP towers through open_clip_torch itself, for both models: the config open_clip reads,
hidden states counted as transformers counts CLIP's, open_clip's own preprocessing, the three
location spellings, the tiny models training (also under ZeRO-3) and reloading without the
tower's folder.

The tiny towers are written here in open_clip's hub layout (`open_clip_config.json` +
`open_clip_model.safetensors`); open_clip itself reads them back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import expand2square, process_images
from llava.model.builder import build_from_backbones, load_pretrained_model
from llava.model.open_clip_config import VISION_DEFAULTS, OpenClipVisionConfig
from llava.model.open_clip_tower import OpenClipImageProcessor, OpenClipVisionModel
from llava.model.vision_tower import (
    VisionTower,
    check_select_feature,
    load_image_processor,
    read_vision_config,
)
from tests import tolerances
from tests.model.authors_bundle_helpers import add_to_cache, revision_of
from tests.model.model_helpers import randomize_trainables
from tests.train.multinode import TRAIN_MODULE, free_port
from tests.train.train_helpers import REPO, SUBPROCESS_ENV, run_training

open_clip = pytest.importorskip(
    "open_clip",
    reason="the openclip extra (open_clip_torch, which needs torchvision and so torch 2.14) is not installed; "
    "CI runs these tests in its second environment",
)

# A tiny open_clip CLIP: a 32-wide, 2-block ViT on 32 px images in 8 px patches (16 patches), a
# one-layer text tower; preprocessing other than open_clip's defaults, so that it must be read.
TINY_MODEL_CFG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}
TINY_PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear"}
# CLIPA's tower shape: no ln_pre, average pooling (its class position is not what it pools).
AVG_POOL = {"no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True}
HUB_ID = "tiny-org/tiny-open-clip"


def write_tiny_open_clip(folder: Path, seed: int = 0, **vision) -> str:
    """The tiny model in open_clip's hub layout; returns its `local-dir:` location. Every tensor
    of open_clip's initialisation is moved by a seeded draw, so no LayerNorm is an identity."""
    model_cfg = {**TINY_MODEL_CFG, "vision_cfg": {**TINY_MODEL_CFG["vision_cfg"], **vision}}
    folder.mkdir(parents=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": TINY_PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    generator = torch.Generator().manual_seed(seed)
    state = {k: v + 0.2 * torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def tiny_tower(tmp_path_factory) -> str:
    return write_tiny_open_clip(tmp_path_factory.mktemp("open-clip") / "tiny")


@pytest.fixture(scope="module")
def avg_pool_tower(tmp_path_factory) -> str:
    return write_tiny_open_clip(tmp_path_factory.mktemp("open-clip") / "avg", seed=1, **AVG_POOL)


def _pixels(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _as_lists(cfg: dict) -> dict:
    """A preprocess cfg with its tuples as lists (as JSON stores them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def test_the_config_is_what_open_clip_reads(tiny_tower):
    config = read_vision_config(tiny_tower)
    assert isinstance(config, OpenClipVisionConfig)
    assert (config.hidden_size, config.num_hidden_layers, config.image_size, config.patch_size) == (
        32,
        2,
        32,
        8,
    )
    vision = asdict(open_clip.CLIPVisionCfg(**TINY_MODEL_CFG["vision_cfg"]))
    assert config.model_cfg == {"embed_dim": 16, "quick_gelu": True, "vision_cfg": vision}
    model = open_clip.create_model(tiny_tower)
    assert config.preprocess_cfg == _as_lists(open_clip.get_model_preprocess_cfg(model))
    stored = json.loads(json.dumps(config.to_dict()))  # as config.json holds it
    assert AutoConfig.for_model(**stored).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="num_hidden_layers=3 disagrees with its vision_cfg"):
        OpenClipVisionConfig(**{**stored, "num_hidden_layers": 3})


def test_the_defaults_are_open_clips():
    """The fields a vision_cfg may leave out default to open_clip's values; the config's own
    default is open_clip's ViT-L-14-336-quickgelu with its OpenAI weights' preprocessing."""
    defaults = asdict(open_clip.CLIPVisionCfg())
    assert VISION_DEFAULTS == {k: defaults[k] for k in VISION_DEFAULTS}
    default, read = OpenClipVisionConfig(), read_vision_config("open_clip:ViT-L-14-336-quickgelu,openai")
    assert (default.hidden_size, default.num_hidden_layers, default.image_size, default.patch_size) == (
        read.hidden_size,
        read.num_hidden_layers,
        read.image_size,
        read.patch_size,
    )
    assert asdict(open_clip.CLIPVisionCfg(**default.model_cfg["vision_cfg"])) == read.model_cfg["vision_cfg"]
    assert default.preprocess_cfg == read.preprocess_cfg


def test_built_in_names_take_a_pretrained_tag():
    """`open_clip:<model>,<pretrained>`, read without downloading the weights."""
    config = read_vision_config("open_clip:ViT-B-32,laion2b_s34b_b79k")
    assert (config.hidden_size, config.num_hidden_layers, config.image_size, config.patch_size) == (
        768,
        12,
        224,
        32,
    )
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    assert config.preprocess_cfg["mean"] == list(tag["mean"])
    refusals = {
        "open_clip:ViT-B-32": "an architecture alone has random weights",
        "open_clip:ViT-B-32,no_such_tag": "neither a pretrained tag of ViT-B-32",
        "open_clip:ViT-B-32,openai": "trained with quick_gelu=True, and ViT-B-32 builds quick_gelu=False",
        "open_clip:RN50-quickgelu,openai": "ResNet towers are not supported",
        "open_clip:ViT-B-16-SigLIP,webli": "towers built by timm are not supported",
        "open_clip:No-Such-ViT,x": "is not one of open_clip's models",
    }
    for location, message in refusals.items():
        with pytest.raises(ValueError, match=message):
            read_vision_config(location)


def test_a_built_in_name_takes_a_weights_file(tiny_tower, tmp_path):
    """`open_clip:<model>,<file>`: an architecture open_clip knows (here one registered with
    `open_clip.add_model_config`) with a weights file, and open_clip's default preprocessing."""
    name = "tiny-llava-test-vit"
    (tmp_path / f"{name}.json").write_text(json.dumps(TINY_MODEL_CFG))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    weights = Path(tiny_tower.removeprefix("local-dir:")) / "open_clip_model.safetensors"
    location = f"open_clip:{name},{weights}"
    config = read_vision_config(location)
    assert config.model_cfg == read_vision_config(tiny_tower).model_cfg
    model = open_clip.create_model(name, pretrained=str(weights))
    assert config.preprocess_cfg == _as_lists(open_clip.get_model_preprocess_cfg(model))
    assert config.preprocess_cfg["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    ours, local = (
        OpenClipVisionModel.from_pretrained(location),
        OpenClipVisionModel.from_pretrained(tiny_tower),
    )
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in local.state_dict().items())


def _hooked_hidden_states(visual, pixels: torch.Tensor) -> list[torch.Tensor]:
    """open_clip's own forward of `visual`, with the output of `ln_pre` and of every residual block."""
    captured: list[torch.Tensor] = []
    modules = [visual.ln_pre, *visual.transformer.resblocks]
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in modules]
    try:
        with torch.no_grad():
            visual(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.mark.parametrize("tower", ["tiny_tower", "avg_pool_tower"])
def test_hidden_states_are_open_clips_block_outputs(tower, request):
    """Index 0 is `ln_pre`'s output (an identity without ln_pre), index i block i-1's output;
    `patch` features are open_clip's own intermediates (class token dropped)."""
    location = request.getfixturevalue(tower)
    reference = open_clip.create_model(location).eval()
    pixels = _pixels(2)
    hooked = _hooked_hidden_states(reference.visual, pixels)
    ours = OpenClipVisionModel.from_pretrained(location).eval()
    with torch.no_grad():
        hidden = ours(pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and all(h.shape == (2, 17, 32) for h in hidden)
    for mine, theirs in zip(hidden, hooked, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)  # the same modules on the same values
    tower_module = VisionTower(read_vision_config(location), [-1, -2, 0])
    tower_module.load_pretrained_weights(location)
    features = tower_module.eval()(pixels)  # [2, 16, 3 x 32]
    with torch.no_grad():
        own = reference.visual.forward_intermediates(
            pixels, indices=[1, 0], output_fmt="NLC", intermediates_only=True
        )["image_intermediates"]
    expected = torch.cat([own[1], own[0], hooked[0][:, 1:]], dim=-1)
    torch.testing.assert_close(features, expected, rtol=0, atol=0)


def test_cls_patch_needs_a_tower_that_pools_its_class_token(tiny_tower, avg_pool_tower, tiny_checkpoints):
    tower = VisionTower(read_vision_config(tiny_tower), [-2], "cls_patch")
    tower.load_pretrained_weights(tiny_tower)
    assert tower.eval()(_pixels(1)).shape == (1, 17, 32)  # the class position first
    with pytest.raises(ValueError, match="OpenCLIP tower's pooling is pool_type='avg', not its class token"):
        check_select_feature(read_vision_config(avg_pool_tower), "cls_patch")
    with pytest.raises(ValueError, match="pool_type='avg'"):
        build_from_backbones(
            "llava_llama", tiny_checkpoints[0], avg_pool_tower, mm_vision_select_feature="cls_patch"
        )


def test_hidden_states_count_as_transformers_counts_clips(tiny_tower):
    """The same weights in transformers' CLIPVisionModel: its hidden_states[i] is ours at i."""
    ours = OpenClipVisionModel.from_pretrained(tiny_tower).eval()
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )  # fmt: skip
    clip = CLIPVisionModel(config).eval()
    visual = {k: v for k, v in ours.visual.state_dict().items()}
    state = {
        "embeddings.class_embedding": visual["class_embedding"],
        "embeddings.patch_embedding.weight": visual["conv1.weight"],
        "embeddings.position_embedding.weight": visual["positional_embedding"],
        "pre_layrnorm.weight": visual["ln_pre.weight"],
        "pre_layrnorm.bias": visual["ln_pre.bias"],
        "post_layernorm.weight": visual["ln_post.weight"],
        "post_layernorm.bias": visual["ln_post.bias"],
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    names["attn.out_proj"] = "self_attn.out_proj"
    for i in range(2):
        block, layer = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for theirs, mine in names.items():
                state[f"{layer}{mine}.{kind}"] = visual[f"{block}{theirs}.{kind}"]
            q, k, v = visual[f"{block}attn.in_proj_{kind}"].chunk(3)
            state.update(
                {f"{layer}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v), strict=True)}
            )
    clip.load_state_dict(state, strict=True)
    pixels = _pixels(2)
    with torch.no_grad():
        mine = ours(pixels).hidden_states
        theirs = clip(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs, strict=True):
        # fused and separate q/k/v projections: the same sums in other orders
        torch.testing.assert_close(a, b, rtol=0, atol=tolerances.model_forward(b, config))


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 45, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # 45 x 30, not square


def test_preprocessing_is_open_clips_transform(tiny_tower, tmp_path):
    """The processor is open_clip's evaluation transform (exactly), `pad` LLaVA's mean-colour square
    before it, and it reloads from a checkpoint folder."""
    _, _, preprocess = open_clip.create_model_and_transforms(tiny_tower)
    processor = load_image_processor(tiny_tower)
    assert isinstance(processor, OpenClipImageProcessor) and processor.size == {"height": 32, "width": 32}
    image = _image()
    ours = processor(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, preprocess(image)[None], rtol=0, atol=0)
    fill = tuple(int(x * 255) for x in TINY_PREPROCESS["mean"])
    padded = process_images([image], processor, "pad")
    torch.testing.assert_close(padded, preprocess(expand2square(image, fill))[None], rtol=0, atol=0)
    processor.save_pretrained(tmp_path)
    reloaded = load_image_processor(str(tmp_path))
    assert (
        isinstance(reloaded, OpenClipImageProcessor) and reloaded.preprocess_cfg == processor.preprocess_cfg
    )
    torch.testing.assert_close(process_images([image], reloaded, "pad"), padded, rtol=0, atol=0)


def test_a_hub_id_reads_the_offline_cache(tiny_tower, tmp_path, monkeypatch):
    """`hf-hub:<org>/<name>` from a Hugging Face cache with HF_HUB_OFFLINE: the same tower."""
    from huggingface_hub import constants

    folder = Path(tiny_tower.removeprefix("local-dir:"))
    add_to_cache(tmp_path, HUB_ID, revision_of("tiny-open-clip"), folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    hub = f"hf-hub:{HUB_ID}"
    local_config, hub_config = read_vision_config(tiny_tower), read_vision_config(hub)
    assert hub_config.model_cfg == local_config.model_cfg
    assert hub_config.preprocess_cfg == local_config.preprocess_cfg
    local, remote = OpenClipVisionModel.from_pretrained(tiny_tower), OpenClipVisionModel.from_pretrained(hub)
    assert all(torch.equal(v, remote.state_dict()[k]) for k, v in local.state_dict().items())
    assert load_image_processor(hub).preprocess_cfg == local_config.preprocess_cfg


def test_locations_that_are_not_open_clips_are_named(tiny_tower, tmp_path):
    folder = tiny_tower.removeprefix("local-dir:")
    with pytest.raises(ValueError, match=f"name it local-dir:{folder}"):
        read_vision_config(folder)
    with pytest.raises(FileNotFoundError, match="open_clip_config.json is missing"):
        read_vision_config(f"local-dir:{tmp_path}")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CFG}))
    with pytest.raises(FileNotFoundError, match="holds no weights"):
        OpenClipVisionModel.from_pretrained(f"local-dir:{tmp_path}")
    with pytest.raises(ValueError, match="expected hf-hub:<org>/<name>"):
        read_vision_config("hf-hub:no-slash")


def _train_flags(
    llm: str, tower: str, data: tuple[str, str], output_dir: Path, method: str, steps: int = 2, batch: int = 4
) -> list[str]:
    """`steps` steps of full fine-tuning (the LLM and the fusion branch / projector) on the toy data."""
    flags = {
        "model_type": method,
        "model_name_or_path": llm,
        "vision_tower": tower,
        "version": "v1",
        "data_path": data[0],
        "image_folder": data[1],
        "output_dir": str(output_dir),
        "per_device_train_batch_size": str(batch),
        "learning_rate": "1e-3",
        "lr_scheduler_type": "constant",
        "max_steps": str(steps),
        "save_strategy": "no",
        "logging_steps": "1",
        "report_to": "none",
        "model_max_length": "128",
        "disable_tqdm": "True",
        "seed": "0",
    }
    return [item for name, value in flags.items() for item in (f"--{name}", value)]


@pytest.mark.parametrize("method", ["fusion_llama", "llava_llama"])
def test_both_models_train_and_reload_without_the_towers_folder(
    method, tiny_tower, tiny_checkpoints, toy_dataset, tmp_path
):
    """A run on an OpenCLIP tower (its images through open_clip's transform) saves a checkpoint
    whose config describes the tower and whose weights hold it: with the tower's folder gone, it
    loads with the trained weights and gives identical logits."""
    tower_folder = tmp_path / "tower"
    shutil.copytree(tiny_tower.removeprefix("local-dir:"), tower_folder)
    run = tmp_path / "run"
    summary, trained = run_training(
        _train_flags(tiny_checkpoints[0], f"local-dir:{tower_folder}", toy_dataset, run, method)
    )
    assert len(summary["losses"]) == 2 and all(np.isfinite(summary["losses"]))
    shutil.rmtree(tower_folder)
    _, loaded, processor, _ = load_pretrained_model(str(run), device="cpu", attn_implementation="eager")
    assert isinstance(processor, OpenClipImageProcessor)
    assert loaded.config.mm_vision_tower == f"local-dir:{tower_folder}"
    reference = type(loaded)(loaded.config)
    reference.load_state_dict(trained, strict=True)
    ids = torch.tensor([[5, 40, IMAGE_TOKEN_INDEX, 41, 42]])
    pixels = process_images([_image()], processor, loaded.config)
    with torch.no_grad():
        before = reference.eval()(input_ids=ids, images=pixels).logits
        after = loaded.eval()(input_ids=ids, images=pixels).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("method", ["fusion_llama", "llava_llama"])
def test_save_and_load_give_identical_logits(method, tiny_tower, tiny_checkpoints, tmp_path):
    """As for the transformers towers (tests/model/test_families.py), on the OpenCLIP one."""
    model, _ = build_from_backbones(method, tiny_checkpoints[0], tiny_tower, attn_implementation="eager")
    randomize_trainables(model)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_checkpoints[0]).save_pretrained(tmp_path)
    load_image_processor(tiny_tower).save_pretrained(tmp_path)
    _, loaded, _, _ = load_pretrained_model(str(tmp_path), device="cpu", attn_implementation="eager")
    ids = torch.tensor([[5, 40, IMAGE_TOKEN_INDEX, 41, 42]])
    with torch.no_grad():
        before = model.eval()(input_ids=ids, images=_pixels(1)).logits
        after = loaded.eval()(input_ids=ids, images=_pixels(1)).logits
    assert torch.equal(before, after)
    # the stored vision_config, read back from config.json, is the tower location's own
    loaded.get_vision_tower().load_pretrained_weights(tiny_tower)


@pytest.mark.slow
def test_zero3_gathers_what_open_clip_reads_outside_the_visual_forward(
    tiny_tower, tiny_checkpoints, toy_dataset, tmp_path
):
    """open_clip's `_embeds` reads `visual`'s class and position embeddings outside `visual`'s
    forward. Under ZeRO-3 with every tensor partitioned (2 ranks, persistence threshold 0),
    DeepSpeed gathers them as external parameters: the run finishes and its first loss is the
    single process's."""
    llm = tiny_checkpoints[0]
    single, _ = run_training(
        _train_flags(llm, tiny_tower, toy_dataset, tmp_path / "one", "fusion_llama", 1, 2)
    )
    zero3 = json.loads((REPO / "scripts" / "zero3.json").read_text())
    zero3["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    (tmp_path / "accelerator.json").write_text(json.dumps({"use_configured_state": True}))
    argv = _train_flags(llm, tiny_tower, toy_dataset, tmp_path / "two", "fusion_llama", 1, 1)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", TRAIN_MODULE, *argv, "--deepspeed", str(tmp_path / "zero3.json"),
        "--accelerator_config", str(tmp_path / "accelerator.json"),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "two" / "training_summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["partitioned_parameters"] > 0
    # one forward pass of the same samples, split over two ranks: the same sums in other orders
    llm_config = AutoConfig.from_pretrained(llm)
    width = max(llm_config.intermediate_size, 4 * 32, 2 * 128)  # the MLPs, a micro-batch's tokens
    depth = tolerances.transformer_depth(llm_config.num_hidden_layers + 2) + 2
    (one,), (two,) = single["losses"], summary["losses"]
    assert abs(one - two) <= tolerances.forward(width, depth, one)
