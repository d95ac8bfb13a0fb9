"""LLaVA-1.5's own checkpoint files, written here exactly as LLaVA's code writes them, loaded
through `load_pretrained_model` (LLaVA's positional signature) and the eval runners' loader.

The facts (from LLaVA's `train/train.py`, `model/llava_arch.py`, `model/builder.py`): a flat Llama
config with `"model_type": "llava"` and `mm_*` fields; merged weights as `torch.save`d shards and
an index; LoRA runs as a PEFT adapter plus `non_lora_trainables.bin` under PEFT's key prefixes,
with the base LLM's `architectures`; stage-1 runs as `mm_projector.bin`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoTokenizer

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.inference import DecodingSettings, LoadedModel, open_conversation
from llava.mm_utils import process_images
from llava.model.builder import build_from_backbones, load_pretrained_model
from llava.model.llava_formats import LLAVA_MM_PROJECTOR, LLAVA_NON_LORA_TRAINABLES, parse_select_layer
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.vision_tower import load_image_processor
from llava.model.weights import UnsafeWeightsError
from llava.tools.export_llava_hf import export_llava_hf
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower
from tests import tolerances
from tests.model.model_helpers import randomize_parameters

PROMPT = DEFAULT_IMAGE_TOKEN + "\nWhat is in the image?"  # one image, placed as the runners place it
NAME = "llava-v1.5-7b"  # LLaVA's `model_name` argument: logged, never used
LLAVA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOWER = "model.vision_tower."


class _Payload:
    """Not a tensor: unpickling it needs more than `weights_only=True` allows."""


def _image() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)  # not square: `pad` and `square` give other pixels


def _writer(build, **fields) -> LlavaLlamaForCausalLM:
    """The model whose files are written: LLaVA-1.5 with a non-trivial projector."""
    return build("llava_llama", **fields)


def llava_config(llm: str, vision: str, architectures: list[str], **fields) -> dict:
    """config.json as LLaVA's training writes it: the base LLM's flat config (transformers 4.31
    style) with `model_type` "llava" and the `mm_*` fields of LLaVA-1.5's scripts."""
    raw = json.loads(Path(llm, "config.json").read_text())
    for key in ("dtype", "rope_parameters", "head_dim", "attention_bias", "mlp_bias"):
        raw.pop(key)
    raw.update(
        {
            "_name_or_path": llm,
            "architectures": architectures,
            "model_type": "llava",
            "torch_dtype": "float32",
            "transformers_version": "4.31.0",
            "rope_scaling": None,
            "max_length": 4096,
            "mm_vision_tower": vision,
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "mm_hidden_size": 32,
            "mm_projector_type": "mlp2x_gelu",
            "mm_patch_merge_type": "flat",
            "use_mm_proj": True,
            "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False,
            "image_aspect_ratio": "pad",
            "image_grid_pinpoints": None,
            "tune_mm_mlp_adapter": False,
            "freeze_mm_mlp_adapter": False,
            "unfreeze_mm_vision_tower": False,
            "mm_projector_lr": None,
            "tokenizer_padding_side": "right",
            "tokenizer_model_max_length": 1024,
            "mm_resampler_type": None,
            "tune_mm_vision_resampler": False,
            "freeze_mm_vision_resampler": False,
        }
    )
    raw.update(fields)
    return raw


def _write_config(folder: Path, raw: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))


def save_shards(state: dict[str, torch.Tensor], folder: Path, fmt: str, n_shards: int = 2) -> None:
    """Model weights as `save_pretrained` (4.31) writes them: one file, or shards and an index."""
    keys = sorted(state)
    bin_format = fmt.startswith("bin")
    ext, stem, index = (
        ("bin", "pytorch_model", "pytorch_model.bin.index.json")
        if bin_format
        else ("safetensors", "model", "model.safetensors.index.json")
    )

    def write(part: dict, file: Path) -> None:
        if bin_format:
            torch.save(part, file)
        else:
            save_file(part, str(file), metadata={"format": "pt"})

    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if not fmt.endswith("sharded"):
        write(state, folder / f"{stem}.{ext}")
        return
    size = -(-len(keys) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        name = f"{stem}-{i + 1:05d}-of-{n_shards:05d}.{ext}"
        group = keys[i * size : (i + 1) * size]
        write({k: state[k] for k in group}, folder / name)
        weight_map.update(dict.fromkeys(group, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    (folder / index).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def save_merged(
    writer, folder: Path, tiny, fmt: str = "bin-sharded", with_tower: bool = True, **fields
) -> Path:
    """A merged LLaVA-1.5 folder (as `merge_lora_weights.py` or full fine-tuning leaves it)."""
    llm, vision = tiny
    _write_config(folder, llava_config(llm, vision, ["LlavaLlamaForCausalLM"], **fields))
    state = {k: v for k, v in writer.state_dict().items() if with_tower or not k.startswith(TOWER)}
    save_shards(state, folder, fmt)
    AutoTokenizer.from_pretrained(llm).save_pretrained(folder)
    return folder


def save_lora_run(writer, folder: Path, tiny, adapter: str = "bin"):
    """A LLaVA-1.5 LoRA run's output folder; returns the PEFT model that wrote it."""
    llm, vision = tiny
    # LLaVA adds LoRA before its tower and projector exist, so its target names meet only the LLM.
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=LLAVA_LORA_TARGETS,
        exclude_modules=r".*\.(vision_tower|mm_projector)\..*",
    )
    peft_model = get_peft_model(writer, lora)
    randomize_parameters(peft_model, ("lora_B",), std=0.1, seed=7)
    peft_model.save_pretrained(folder, safe_serialization=adapter == "safetensors")
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    adapter_config.pop("exclude_modules")  # the PEFT of LLaVA's days had no such field
    adapter_config["base_model_name_or_path"] = llm
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    non_lora = {k: v.detach().clone() for k, v in peft_model.named_parameters() if "mm_projector" in k}
    assert all(k.startswith("base_model.model.model.mm_projector.") for k in non_lora)
    torch.save(non_lora, folder / LLAVA_NON_LORA_TRAINABLES)
    _write_config(folder, llava_config(llm, vision, ["LlamaForCausalLM"], mm_projector_lr=2e-5))
    return peft_model.eval()


def save_stage1(writer, folder: Path, tiny) -> Path:
    """A LLaVA-1.5 stage-1 (projector pre-training) folder: config.json and mm_projector.bin."""
    llm, vision = tiny
    projector = {k: v.detach().clone() for k, v in writer.named_parameters() if "mm_projector" in k}
    assert all(k.startswith("model.mm_projector.") for k in projector)
    raw = llava_config(
        llm, vision, ["LlamaForCausalLM"], image_aspect_ratio="square", tune_mm_mlp_adapter=True
    )
    _write_config(folder, raw)
    torch.save(projector, folder / LLAVA_MM_PROJECTOR)
    return folder


def _writer_as_loaded(writer, tiny) -> LoadedModel:
    llm, vision = tiny
    return LoadedModel(
        AutoTokenizer.from_pretrained(llm), writer, load_image_processor(vision), 1024, "writer"
    )


def assert_same_model(loaded: LoadedModel, writer, tiny) -> None:
    """Same pixels (aspect handling), logits and greedy answer as the writer. The logits to float32's
    rounding of other summation orders: the loaded model runs SDPA where the writer ran eager
    attention, and has its LoRA merged into the weights where the writer adds its path."""
    _, vision = tiny
    assert isinstance(loaded.model, LlavaLlamaForCausalLM)
    image = _image()
    pixels = loaded.encode_images([image])
    aspect = writer.config.image_aspect_ratio
    assert loaded.model.config.image_aspect_ratio == aspect
    assert torch.equal(pixels, process_images([image], load_image_processor(vision), aspect))
    ids = loaded.prompt_ids(open_conversation("vicuna_v1", PROMPT))
    with torch.no_grad():
        got = loaded.model(input_ids=torch.tensor([ids]), images=pixels).logits  # [1, T, V]
        expected = writer(input_ids=torch.tensor([ids]), images=pixels).logits  # [1, T, V]
    atol = tolerances.model_forward(expected, loaded.model.config, tokens=expected.shape[1])
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    settings = DecodingSettings(max_new_tokens=8)
    reference = writer.merge_and_unload() if hasattr(writer, "merge_and_unload") else writer
    answer = loaded.generate([ids], [pixels], settings)
    assert answer == _writer_as_loaded(reference, tiny).generate([ids], [pixels], settings)


def load_both_ways(path: Path, base: str | None) -> list[LoadedModel]:
    """LLaVA's positional call (as its `merge_lora_weights.py` makes it) and the eval runners' loader."""
    positional = LoadedModel(*load_pretrained_model(str(path), base, NAME, device_map="cpu"), NAME)
    return [positional, LoadedModel.load(str(path), base, device="cpu")]


@pytest.mark.parametrize(
    "fmt, with_tower",
    [("bin-sharded", True), ("bin", False), ("safetensors", True), ("safetensors-sharded", False)],
)
def test_merged_llava_checkpoint_loads_with_the_writers_logits(
    build, tiny_checkpoints, tmp_path, fmt, with_tower
):
    writer = _writer(build)
    folder = save_merged(writer, tmp_path / "merged", tiny_checkpoints, fmt, with_tower)
    for loaded in load_both_ways(folder, None):
        assert_same_model(loaded, writer, tiny_checkpoints)


@pytest.mark.parametrize(
    "stored, layers", [(-2, [-2]), ("-2", [-2]), ("-1,-2", [-1, -2])], ids=["int", "string", "hd-string"]
)
def test_mm_vision_select_layer_as_int_or_string_and_mm_hidden_size_from_the_tower(
    build, tiny_checkpoints, tmp_path, stored, layers
):
    writer = _writer(build, mm_vision_select_layer=layers)
    folder = save_merged(
        writer,
        tmp_path / "m",
        tiny_checkpoints,
        mm_vision_select_layer=stored,
        mm_hidden_size=32 * len(layers),
    )
    loaded = load_both_ways(folder, None)[0]
    assert (
        loaded.model.config.mm_vision_select_layer == layers
        and loaded.model.config.mm_hidden_size == 32 * len(layers)
    )
    assert_same_model(loaded, writer, tiny_checkpoints)
    assert parse_select_layer(" -1, -2 ", "x") == [-1, -2]
    with pytest.raises(ValueError, match="x: mm_vision_select_layer 'last'"):
        parse_select_layer("last", "x")


def test_stored_tower_tensors_are_ignored_unless_the_tower_was_trained(build, tiny_checkpoints, tmp_path):
    writer = _writer(build)
    trained = _writer(build)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if name.startswith(TOWER):
                param.add_(0.05 * torch.randn_like(param))
    # LLaVA's loader takes the tower from mm_vision_tower, whatever the shards hold ...
    folder = save_merged(trained, tmp_path / "frozen", tiny_checkpoints)
    assert_same_model(load_both_ways(folder, None)[1], writer, tiny_checkpoints)
    # ... unless it was trained: then the checkpoint's tower it is, and all of it.
    folder = save_merged(trained, tmp_path / "unfrozen", tiny_checkpoints, unfreeze_mm_vision_tower=True)
    assert_same_model(load_both_ways(folder, None)[1], trained, tiny_checkpoints)
    folder = save_merged(
        trained, tmp_path / "no-tower", tiny_checkpoints, "bin", False, unfreeze_mm_vision_tower=True
    )
    with pytest.raises(KeyError, match=r"no-tower holds 0 of the vision tower's \d+ weights"):
        load_pretrained_model(str(folder), None, NAME, device="cpu")


@pytest.fixture(scope="module")
def pickled_base(tiny_checkpoints, tmp_path_factory) -> str:
    """The tiny LLM as vicuna-7b-v1.5 ships: `pytorch_model-*.bin` shards and an index."""
    llm, _ = tiny_checkpoints
    folder = tmp_path_factory.mktemp("vicuna-bin")
    for file in Path(llm).iterdir():
        if file.name != "model.safetensors":
            shutil.copy(file, folder / file.name)
    from safetensors.torch import load_file

    save_shards(load_file(str(Path(llm, "model.safetensors"))), folder, "bin-sharded")
    return str(folder)


@pytest.mark.parametrize("adapter, base_format", [("bin", "safetensors"), ("safetensors", "bin")])
def test_llava_lora_run_on_its_base_loads_with_the_writers_logits(
    build, tiny_checkpoints, pickled_base, tmp_path, adapter, base_format
):
    peft_model = save_lora_run(_writer(build), tmp_path / "lora", tiny_checkpoints, adapter)
    assert (tmp_path / "lora" / f"adapter_model.{adapter}").exists()
    base = tiny_checkpoints[0] if base_format == "safetensors" else pickled_base
    for loaded in load_both_ways(tmp_path / "lora", base):
        assert_same_model(loaded, peft_model, tiny_checkpoints)


def test_llava_stage1_projector_on_its_base_loads_with_the_writers_logits(build, tiny_checkpoints, tmp_path):
    writer = _writer(build, image_aspect_ratio="square")
    folder = save_stage1(writer, tmp_path / "stage1", tiny_checkpoints)
    for loaded in load_both_ways(folder, tiny_checkpoints[0]):
        assert_same_model(loaded, writer, tiny_checkpoints)


@pytest.fixture(scope="module")
def llava_hf_export(tmp_path_factory):
    """A baseline checkpoint and its llava-hf export (a Llama-like tokenizer, as the export needs)."""
    root = tmp_path_factory.mktemp("hf")
    llm, vision = make_llm(root, legacy_prefix=True), make_vision_tower(root)
    model, _ = build_from_backbones("llava_llama", str(llm), str(vision))
    with torch.no_grad():
        for param in model.model.mm_projector.parameters():
            param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(5)) * 0.5)
    model.save_pretrained(root / "ckpt")
    AutoTokenizer.from_pretrained(llm).save_pretrained(root / "ckpt")
    load_image_processor(str(vision)).save_pretrained(root / "ckpt")
    return model.eval(), (str(llm), str(vision)), export_llava_hf(str(root / "ckpt"), root / "out")


def test_llava_hf_folder_dispatches_to_the_llava_hf_loader(llava_hf_export):
    writer, tiny, out = llava_hf_export
    for loaded in load_both_ways(out, None):
        image = _image()
        pixels = loaded.encode_images([image])
        assert torch.equal(pixels, process_images([image], load_image_processor(tiny[1]), "pad"))
        ids = loaded.prompt_ids(open_conversation("vicuna_v1", PROMPT))
        with torch.no_grad():
            got = loaded.model(input_ids=torch.tensor([ids]), images=pixels).logits  # [1, T, V + 1]
            expected = writer(input_ids=torch.tensor([ids]), images=pixels).logits  # [1, T, V]
        # the export gives the LM head a row for `<image>`: another matmul's shape, maybe its blocking
        atol = tolerances.model_forward(expected, writer.config, tokens=expected.shape[1])
        torch.testing.assert_close(got[..., : expected.shape[-1]], expected, rtol=0, atol=atol)
        settings = DecodingSettings(max_new_tokens=8)
        assert loaded.generate([ids], [pixels], settings) == _writer_as_loaded(writer, tiny).generate(
            [ids], [pixels], settings
        )


def test_a_lora_folder_without_a_base_names_its_adapter_config(build, tiny_checkpoints, tmp_path):
    save_lora_run(_writer(build), tmp_path / "lora", tiny_checkpoints)
    with pytest.raises(ValueError, match=r"lora/adapter_config\.json: .* pass the LLM .* model_base"):
        load_pretrained_model(str(tmp_path / "lora"), None, NAME, device="cpu")
    (tmp_path / "lora" / LLAVA_NON_LORA_TRAINABLES).unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"lora/{LLAVA_NON_LORA_TRAINABLES} is missing.*untrained projector"
    ):
        load_pretrained_model(str(tmp_path / "lora"), tiny_checkpoints[0], NAME, device="cpu")


def test_a_tower_path_that_does_not_exist_names_the_config_and_the_path(build, tiny_checkpoints, tmp_path):
    folder = save_merged(
        _writer(build), tmp_path / "m", tiny_checkpoints, mm_vision_tower=str(tmp_path / "gone")
    )
    with pytest.raises(
        FileNotFoundError, match=rf"m/config\.json: mm_vision_tower: vision tower {tmp_path}/gone: no such"
    ):
        load_pretrained_model(str(folder), None, NAME, device="cpu")


@pytest.mark.parametrize(
    "kind, file",
    [
        ("merged", "pytorch_model-00002-of-00002.bin"),
        ("lora", LLAVA_NON_LORA_TRAINABLES),
        ("lora", "adapter_model.bin"),
        ("stage1", LLAVA_MM_PROJECTOR),
    ],
)
def test_a_pickle_that_needs_more_than_weights_only_is_refused_naming_the_file(
    build, tiny_checkpoints, tmp_path, kind, file
):
    writer, folder, base = _writer(build), tmp_path / kind, tiny_checkpoints[0]
    if kind == "merged":
        save_merged(writer, folder, tiny_checkpoints)
        base = None
    elif kind == "lora":
        save_lora_run(writer, folder, tiny_checkpoints)
    else:
        save_stage1(writer, folder, tiny_checkpoints)
    state = torch.load(folder / file, weights_only=True)
    state[next(iter(state))] = _Payload()
    torch.save(state, folder / file)
    with pytest.raises(UnsafeWeightsError, match=rf"{kind}/{file}: refused: .*_Payload object"):
        load_pretrained_model(str(folder), base, NAME, device="cpu")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mm_use_im_start_end", True, r"mm_use_im_start_end=True: only False can be honoured"),
        ("mm_use_im_patch_token", True, r"mm_use_im_patch_token=True: only False can be honoured"),
        ("mm_patch_merge_type", "spatial_unpad", r"mm_patch_merge_type='spatial_unpad': only 'flat'"),
        ("image_aspect_ratio", "anyres", r"image_aspect_ratio='anyres': only 'pad' or 'square'"),
        (
            "mm_hidden_size",
            1024,
            r"mm_hidden_size=1024 disagrees with the vision tower .*: hidden_size 32 x 1",
        ),
        ("mm_vision_select_layer", None, r"mm_vision_select_layer is missing"),
        ("mm_projector_type", "resampler", r"unknown mm_projector_type 'resampler'"),
        ("mm_new_feature", 1, r"unknown field\(s\) \['mm_new_feature'\]"),
    ],
)
def test_a_config_value_this_project_cannot_honour_names_the_config_and_field(
    build, tiny_checkpoints, tmp_path, field, value, message
):
    folder = save_merged(_writer(build), tmp_path / "m", tiny_checkpoints, "bin", False, **{field: value})
    with pytest.raises(ValueError, match=rf"m/config\.json: {message}"):
        load_pretrained_model(str(folder), None, NAME, device="cpu")


def test_model_name_decides_nothing_and_device_follows_llavas_rules(build, tiny_checkpoints, tmp_path):
    writer = _writer(build)
    folder = save_merged(writer, tmp_path / "m", tiny_checkpoints, "bin", False)
    # LLaVA would look for a base and LoRA weights behind a name with "lora" in it; the files say merged.
    loaded = LoadedModel(*load_pretrained_model(str(folder), None, "llava-v1.5-7b-lora", device="cpu"), NAME)
    assert_same_model(loaded, writer, tiny_checkpoints)
    # lmms-eval's llava adapter tries LLaVA-NeXT's `multimodal=True` first, and on a TypeError
    # calls again without it, as for LLaVA-1.5's loader.
    with pytest.raises(TypeError, match="multimodal"):
        load_pretrained_model(str(folder), None, NAME, device_map="cpu", multimodal=True)
    with pytest.raises(TypeError, match="the third argument is LLaVA's model_name"):
        load_pretrained_model(str(folder), None, True)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device 'cuda' was asked for .* pass device='cpu'"):
            load_pretrained_model(str(folder), None, NAME)
    with pytest.raises(ValueError, match="splitting a model over several devices is not supported"):
        load_pretrained_model(str(folder), None, NAME, device_map={"model": "cpu", "lm_head": "cpu"})
