"""The checkpoint-format dispatcher (`llava.model.formats`): every tiny checkpoint, written as its
format's own code writes it, is claimed by exactly its format; a folder no format claims, or two
claim, is an error naming the folder, what it holds and what each format looks for; detection
changes nothing on disk; and every import path of the modules the formats came from still works."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoTokenizer

from llava.model import builder, formats
from llava.model.builder import MM_PROJECTOR, NON_LORA_TRAINABLES
from llava.model.formats import (
    FORMATS,
    AmbiguousFormatError,
    CheckpointFormat,
    LoadOptions,
    UnknownFormatError,
    detect_format,
    load_checkpoint,
)
from llava.model.vision_tower import load_image_processor
from llava.tools.export_llava_hf import export_llava_hf
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower
from tests.model.test_llava_formats import save_lora_run, save_merged, save_stage1
from tests.model.test_release_checkpoint import write_release_folder


def _own_lora(build, folder: Path, tiny) -> Path:
    """A LoRA run as this project's training writes it: adapter, non-LoRA trainables, config."""
    model = build("fusion_llama")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.layers\.[1-3]\.self_attn\.\w+_proj")
    get_peft_model(model, lora).save_pretrained(folder)
    trainables = {k: v.clone() for k, v in model.state_dict().items() if ".fusion." in k}
    save_file(trainables, str(folder / NON_LORA_TRAINABLES))
    model.config.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny[0]).save_pretrained(folder)
    return folder


def _own_projector(build, folder: Path, _tiny) -> Path:
    """A stage-1 run of this project's LLaVA-1.5 baseline: config and mm_projector.safetensors."""
    model = build("llava_llama")
    projector = {k: v.clone() for k, v in model.state_dict().items() if "mm_projector" in k}
    folder.mkdir()
    save_file(projector, str(folder / MM_PROJECTOR))
    model.config.save_pretrained(folder)
    return folder


def _llava15_merged(build, folder: Path, tiny) -> Path:
    return save_merged(build("llava_llama"), folder, tiny, fmt="bin-sharded")


def _llava15_lora(build, folder: Path, tiny) -> Path:
    save_lora_run(build("llava_llama"), folder, tiny)
    return folder


def _llava15_stage1(build, folder: Path, tiny) -> Path:
    return save_stage1(build("llava_llama"), folder, tiny)


def _first_release(_build, folder: Path, tiny) -> Path:
    write_release_folder(folder, *tiny, "release_mlp")
    return folder


WRITERS = {
    "own-lora": (_own_lora, "own"),
    "own-projector": (_own_projector, "own"),
    "llava15-merged-bin-shards": (_llava15_merged, "llava-1.5"),
    "llava15-lora": (_llava15_lora, "llava-1.5"),
    "llava15-stage1": (_llava15_stage1, "llava-1.5"),
    "first-release": (_first_release, "first-release"),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_each_tiny_checkpoint_is_claimed_by_exactly_its_format(build, tiny_checkpoints, tmp_path, kind):
    write, expected = WRITERS[kind]
    folder = write(build, tmp_path / kind, tiny_checkpoints)
    assert detect_format(folder).name == expected
    assert [f.name for f in FORMATS if f.detect(folder)] == [expected]


def test_complete_and_text_only_checkpoints_are_this_projects(tiny_model_path, tiny_checkpoints):
    assert detect_format(tiny_model_path).name == "own"
    assert detect_format(tiny_checkpoints[0]).name == "own"  # a plain Llama folder


def test_a_llava_hf_export_is_llava_hf(tmp_path):
    """The baseline exported by `llava.tools.export_llava_hf` (which needs a Llama-like tokenizer)."""
    llm, vision = make_llm(tmp_path, legacy_prefix=True), make_vision_tower(tmp_path)
    model, _ = builder.build_from_backbones("llava_llama", str(llm), str(vision))
    model.save_pretrained(tmp_path / "ckpt")
    AutoTokenizer.from_pretrained(llm).save_pretrained(tmp_path / "ckpt")
    load_image_processor(str(vision)).save_pretrained(tmp_path / "ckpt")
    out = export_llava_hf(str(tmp_path / "ckpt"), tmp_path / "hf")
    assert detect_format(out).name == "llava-hf"
    assert [f.name for f in FORMATS if f.detect(Path(out))] == ["llava-hf"]


def test_detection_changes_nothing_on_disk(tiny_model_path):
    def snapshot():
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(tiny_model_path).iterdir()}

    before = snapshot()
    for candidate in FORMATS:
        candidate.detect(Path(tiny_model_path))
    assert snapshot() == before


def test_an_empty_folder_names_the_folder_and_what_each_format_looks_for(tmp_path):
    with pytest.raises(UnknownFormatError) as error:
        detect_format(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "an empty folder" in message
    for candidate in FORMATS:
        assert f"{candidate.name}: {candidate.looks_for}" in message
    for marker in ("config.json", "adapter_config.json", "non_lora_trainables.bin", "mm_projector.bin"):
        assert marker in message


def test_weights_without_a_config_are_unknown_and_listed(build, tiny_checkpoints, tmp_path):
    folder = _llava15_stage1(build, tmp_path / "stage1", tiny_checkpoints)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{folder}: .*it holds mm_projector\.bin\. Looked for"):
        detect_format(folder)


def test_a_folder_two_formats_claim_is_an_error_naming_both(tiny_model_path, tmp_path):
    """This project's config with a field only the first release writes: claimed by both."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    raw = json.loads(Path(tiny_model_path, "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "stable_fusion": False}))
    with pytest.raises(AmbiguousFormatError) as error:
        detect_format(folder)
    message = str(error.value)
    assert (
        f"{folder}: 2 checkpoint formats claim this folder (own, first-release); it holds config.json"
        in message
    )
    assert "vision_config" in message and "layer_ids_to_inject / use_vision_fusion / stable_fusion" in message


def test_a_broken_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: not valid JSON"):
        detect_format(tmp_path)


def test_load_checkpoint_loads_with_the_format_that_claims_the_folder(tiny_model_path):
    options = LoadOptions(tiny_model_path, torch.float32, "eager", None)
    checkpoint_format, loaded = load_checkpoint(tiny_model_path, None, options)
    assert checkpoint_format.name == "own" and type(loaded.model).__name__ == "FusionLlamaForCausalLM"
    assert "newly initialised: none" in loaded.summary and loaded.image_processor is not None


def test_every_format_module_is_registered_once():
    """A module under llava/model/formats whose FORMAT is a `CheckpointFormat` is in the registry, once."""
    names = [f.name for f in FORMATS]
    assert len(set(names)) == len(names)
    package = Path(formats.__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        module = importlib.import_module(f"llava.model.formats.{info.name}")
        if isinstance(getattr(module, "FORMAT", None), CheckpointFormat):
            assert module.FORMAT in FORMATS, f"{info.name}.FORMAT is not in FORMATS"


# The public names of the loader's modules: every `from llava.model.X import Y` that llava/, tests/,
# scripts/ and docs/ hold, and the rest of each module's public names.
OLD_IMPORTS = {
    "llava.model.builder": (
        "MM_PROJECTOR NON_LORA_TRAINABLES LoadReport ModelBaseError build_from_backbones "
        "load_pretrained_model multimodal_config_from_backbones"
    ),
    "llava.model.checkpoint_parts": (
        "MM_PROJECTOR NON_LORA_TRAINABLES TOWER_PREFIX ensure_vision_tower llava_vision_tower "
        "load_partial_state load_tower_from merge_lora one_of require_complete "
        "require_non_lora_trainables tower_parameter_names"
    ),
    "llava.model.llava_formats": (
        "FIELD_RULES LLAVA_DEFAULT_PROJECTOR LLAVA_MM_PROJECTOR LLAVA_MODEL_TYPES LLAVA_NON_LORA_TRAINABLES "
        "LlavaCheckpointConfig any_value is_llava_config multimodal_fields must_be parse_select_layer "
        "strip_peft_prefixes translate_llava_config"
    ),
    "llava.model.release_checkpoint": (
        "RELEASE_FIELD_RULES RELEASE_FUSION_FILE RELEASE_SKIP_LAYER_FILE RELEASE_TENSORS ReleaseFusionTensors "
        "check_base_copies is_release_config read_release_fusion translate_release_config"
    ),
    "llava.model.llava_hf": (
        "LLAVA_HF_PROJECTOR chat_template from_hf_config from_hf_state_dict is_llava_hf_config "
        "load_llava_hf to_hf_config to_hf_state_dict"
    ),
    "llava.model.weights": (
        "PICKLE_INDEX PICKLE_SINGLE SAFETENSORS_INDEX SAFETENSORS_SINGLE UnsafeWeightsError "
        "check_folder_pickles checkpoint_keys copy_checked load_pickled_weights load_weights "
        "model_weight_files"
    ),
    "llava.model.load_report": "LoadReport from_pretrained_checked",
    "llava.model.paths": "is_hub_id resolve_location",
    "llava.model.fingerprint": "file_sha256 location_fingerprint",
    "llava.model.formats": (
        "FORMATS AmbiguousFormatError CheckpointFormat LoadOptions Loaded ModelBaseError UnknownFormatError "
        "detect_format load_checkpoint"
    ),
}


@pytest.mark.parametrize(
    "module, name", [(module, name) for module, names in OLD_IMPORTS.items() for name in names.split()]
)
def test_every_import_path_still_imports(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_model_base_error_is_one_class_under_both_names():
    assert builder.ModelBaseError is formats.ModelBaseError
