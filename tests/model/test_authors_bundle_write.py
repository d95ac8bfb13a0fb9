"""Writing and converting the authors' bundle: a LoRA run of the published layer trained here
(`--fusion_variant published`, a few steps of the real entry point on backbones from a tiny
Hugging Face cache) exports as their writer lays a bundle out, and loads back with the written
model's logits and greedy answers; bundle -> own folder -> bundle keeps every tensor and the
spec; an own folder imported from a bundle loads through `load_pretrained_model` as the bundle."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.formats.authors_bundle_load import read_authors_bundle
from llava.model.formats.authors_bundle_own import import_bundle
from llava.model.formats.authors_bundle_spec import BundleError
from llava.model.formats.authors_bundle_write import export_bundle
from llava.tools import invllava_bundle
from llava.tools.make_tiny_checkpoints import make_llm
from llava.train.arguments import parse_arguments
from llava.train.train import train
from tests.model.authors_bundle_helpers import (
    ATTENTION,
    FORMAT,
    LANGUAGE_ID,
    MLP,
    SPEC_FIELDS,
    TOP_FIELDS,
    VISION_ID,
    add_to_cache,
    random_delta,
    revision_of,
    sha256,
    tiny_spec,
    write_bundle,
)
from tests.model.test_published_fusion import model_tolerance

PROMPT = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
BUNDLE_FILES = {"COMPLETE", "README.md", "checksums.sha256", "inverse_llava_config.json", "metadata.json",
                "model_delta.safetensors"}  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tiny_hub, toy_dataset, tmp_path_factory):
    """A LoRA run of the published layer (4 steps, LoRA r 8 alpha 16 on layers 1-3) trained on
    the cache's snapshots of the tiny Llama and CLIP, so its files name their revisions."""
    data, images = toy_dataset
    out = tmp_path_factory.mktemp("run") / "published"
    flags = {
        "model_name_or_path": tiny_hub.language, "vision_tower": tiny_hub.vision, "version": "v1",
        "data_path": data, "image_folder": images, "output_dir": out, "per_device_train_batch_size": 2,
        "learning_rate": 4e-3, "weight_decay": 0.0, "logging_steps": 1, "report_to": "none",
        "model_max_length": 128, "disable_tqdm": True, "seed": 0, "lora_enable": True, "lora_r": 8,
        "lora_alpha": 16, "model_type": "fusion_llama", "fusion_variant": "published", "fusion_lr": 4e-3,
        "max_steps": 4, "save_steps": 4,
    }  # fmt: skip
    train(*parse_arguments([item for name, value in flags.items() for item in (f"--{name}", str(value))]))
    return out


@pytest.fixture(scope="module")
def exported(trained_run, tiny_hub, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny-inverse-llava"
    return export_bundle(trained_run, path, cache_dir=tiny_hub.cache, local_files_only=True)


def _rounded_copy(run, folder):
    """The run's folder with its trained tensors rounded to bf16 (and back to their dtype): the
    model the bf16 bundle holds."""
    folder = shutil.copytree(run, folder)
    for name in ("adapter_model.safetensors", "non_lora_trainables.safetensors"):
        state = load_file(folder / name)
        save_file(
            {k: v.to(torch.bfloat16).to(v.dtype) for k, v in state.items()}, folder / name, {"format": "pt"}
        )
    return folder


def _outputs(model):
    """Logits `[1, T, V]` on a prompt with an image, and 8 greedy tokens (KV cache; end of
    sequence held off, as the few steps trained answer it first) per image."""
    with torch.no_grad():
        logits = model(input_ids=PROMPT, images=IMAGES[:1]).logits
    answers = [
        model.generate(PROMPT, images=IMAGES[i : i + 1], max_new_tokens=8, min_new_tokens=8, do_sample=False)
        for i in range(2)
    ]
    return logits, answers


def test_export_lays_the_bundle_out_as_their_writer(exported, tiny_hub, trained_run):
    assert {p.name for p in exported.iterdir()} == BUNDLE_FILES
    assert (exported / "COMPLETE").read_bytes() == b"complete\n"
    lines = (exported / "checksums.sha256").read_text().splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    assert names == sorted(BUNDLE_FILES - {"checksums.sha256"})  # sorted by name, not itself
    for line, name in zip(lines, names, strict=True):
        assert re.fullmatch(r"[0-9a-f]{64}  \S+", line) and line.split()[0] == sha256(exported / name)
    for name in ("inverse_llava_config.json", "metadata.json"):
        text = (exported / name).read_text()
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    config = json.loads((exported / "inverse_llava_config.json").read_text())
    assert set(config) == {"format", "model", "weights", "metadata", "conversation_template"}
    assert (config["format"], config["weights"], config["metadata"]) == (
        FORMAT,
        "model_delta.safetensors",
        "metadata.json",
    )
    model = config["model"]
    assert set(model) == TOP_FIELDS and all(set(model[s]) == fields for s, fields in SPEC_FIELDS.items())
    assert (
        model["language"] | {"checkpoint": LANGUAGE_ID, "revision": tiny_hub.language_revision}
        == model["language"]
    )
    assert (model["vision"]["checkpoint"], model["vision"]["revision"]) == (
        VISION_ID,
        tiny_hub.vision_revision,
    )
    assert model["fusion"]["layers"] == [0] and model["fusion"]["targets"] == ["q", "k", "v"]
    adaptation = model["adaptation"]
    assert (adaptation["rank"], adaptation["alpha"], adaptation["target_suffixes"]) == (
        8,
        16,
        [*ATTENTION, *MLP],
    )
    assert adaptation["exclude_fusion_layers"] is True and adaptation["excluded_layer_indices"] == []
    assert model["projector"] is None and model["torch_dtype"] == "bfloat16"

    metadata = json.loads((exported / "metadata.json").read_text())
    delta = exported / "model_delta.safetensors"
    with safe_open(str(delta), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    assert metadata["model_delta_sha256"] == sha256(delta) and metadata["tensor_names"] == sorted(tensors)
    assert (metadata["base_model"], metadata["vision_model"]) == (LANGUAGE_ID, VISION_ID)
    assert metadata["upstream_base_projection_verification"] == {
        "status": "exact",
        "base_model": LANGUAGE_ID,
        "base_model_revision": tiny_hub.language_revision,
        "tensor_names": sorted(f"language_model.model.layers.0.self_attn.{p}.weight" for p in ATTENTION),
        "omitted_from_release": True,
    }
    assert metadata["source_files"]["adapter_model.safetensors"]["sha256"] == sha256(
        trained_run / "adapter_model.safetensors"
    )
    assert all(t.dtype == torch.bfloat16 for t in tensors.values())
    fusion = [n for n in tensors if ".fusion." in n]
    lora = [n for n in tensors if re.fullmatch(r"language_model\.model\.layers\.[123]\.(self_attn|mlp)\.\w+_proj\.lora_[ab]\.weight", n)]  # fmt: skip
    assert (
        len(fusion) == 12 and len(lora) == 3 * 7 * 2 and len(tensors) == len(fusion) + len(lora)
    )  # no base weight
    assert all(tensors[n].dim() == 0 for n in fusion if ".scales." in n)


def test_exported_run_loads_with_the_written_logits_and_answers(exported, trained_run, tiny_hub, tmp_path):
    """The bundle read back (fp32) against the written model with its trained tensors rounded to
    bf16, loaded by this project's own loader: the same products up to summation order
    (`model_tolerance`), and the same greedy answers."""
    reference = _rounded_copy(trained_run, tmp_path / "rounded")
    _, written, _, _ = load_pretrained_model(str(reference), model_base=str(tiny_hub.language), device="cpu")
    loaded = read_authors_bundle(
        exported, dtype=torch.float32, cache_dir=tiny_hub.cache, local_files_only=True
    )
    expected, expected_answers = _outputs(written)
    logits, answers = _outputs(loaded.model)
    assert (logits - expected).abs().max() <= model_tolerance(written, expected, logits.shape[1])
    assert all(torch.equal(a, b) for a, b in zip(answers, expected_answers, strict=True))
    assert not torch.equal(expected_answers[0], expected_answers[1])  # the images decide the answers


def test_export_then_import_keeps_the_rounded_tensors(exported, trained_run, tiny_hub, tmp_path):
    own = import_bundle(exported, tmp_path / "own", cache_dir=tiny_hub.cache, local_files_only=True)
    for name in ("adapter_model.safetensors", "non_lora_trainables.safetensors"):
        trained, back = load_file(trained_run / name), load_file(own / name)
        assert trained.keys() == back.keys()
        assert all(torch.equal(back[k], trained[k].to(torch.bfloat16)) for k in trained)


@pytest.fixture
def hand_bundle(tiny_hub, tmp_path):
    spec = tiny_spec(tiny_hub, excluded=(2,))
    delta = random_delta(spec, AutoConfig.from_pretrained(tiny_hub.language), seed=3)
    return write_bundle(tmp_path / "hand", spec, delta)


def test_bundle_to_own_to_bundle_is_identical(hand_bundle, tiny_hub, tmp_path):
    own = import_bundle(hand_bundle, tmp_path / "own", cache_dir=tiny_hub.cache, local_files_only=True)
    again = export_bundle(own, tmp_path / "again", cache_dir=tiny_hub.cache, local_files_only=True)
    first, second = (
        load_file(hand_bundle / "model_delta.safetensors"),
        load_file(again / "model_delta.safetensors"),
    )
    assert first.keys() == second.keys()
    assert all(first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)
    config = [
        json.loads((folder / "inverse_llava_config.json").read_text()) for folder in (hand_bundle, again)
    ]
    assert config[0] == config[1]  # the spec (id, initialization_id, excluded layers, ...) and template


def test_imported_folder_loads_as_the_bundle(hand_bundle, tiny_hub, tmp_path):
    own = import_bundle(hand_bundle, tmp_path / "own", cache_dir=tiny_hub.cache, local_files_only=True)
    base = json.loads((own / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tiny_hub.language)
    _, model, processor, _ = load_pretrained_model(str(own), model_base=base, device="cpu")
    loaded = read_authors_bundle(
        hand_bundle, dtype=torch.float32, cache_dir=tiny_hub.cache, local_files_only=True
    )
    expected, expected_answers = _outputs(loaded.model)
    logits, answers = _outputs(model)
    assert (logits - expected).abs().max() <= model_tolerance(model, expected, logits.shape[1])
    assert all(torch.equal(a, b) for a, b in zip(answers, expected_answers, strict=True))
    assert processor.crop_size["height"] == 32


def test_cli_export_and_import(trained_run, tiny_hub, tmp_path):
    hub = ["--cache-dir", str(tiny_hub.cache), "--offline"]
    language = f"{LANGUAGE_ID}@{tiny_hub.language_revision}"
    path = invllava_bundle.main(
        ["export", "--checkpoint", str(trained_run), "--output-dir", str(tmp_path / "b"), "--language", language,
         "--model-id", "tiny-published", *hub]
    )  # fmt: skip
    assert json.loads((path / "inverse_llava_config.json").read_text())["model"]["id"] == "tiny-published"
    own = invllava_bundle.main(["import", str(path), "--output-dir", str(tmp_path / "own"), *hub])
    assert (own / "non_lora_trainables.safetensors").is_file() and (
        own / "inverse_llava_source.json"
    ).is_file()
    assert invllava_bundle.main(["verify", str(path), *hub]).spec.raw["id"] == "tiny-published"


def test_export_refuses_a_run_on_another_base(trained_run, tiny_hub, tmp_path):
    """Pinned to an LLM of the same shapes but other weights: the fusion layer's base q/k/v/o,
    which the bundle omits, would not be the ones the run was trained on."""
    other = make_llm(tmp_path / "other", seed=1)
    add_to_cache(tiny_hub.cache, "tiny-org/other-vicuna", revision_of("other"), other)
    with pytest.raises(BundleError, match=r"the run's base LLM differs from tiny-org/other-vicuna@\w+ in"):
        export_bundle(
            trained_run,
            tmp_path / "b",
            language=f"tiny-org/other-vicuna@{revision_of('other')}",
            cache_dir=tiny_hub.cache,
            local_files_only=True,
        )
    assert not (tmp_path / "b").exists()


def test_export_refuses_an_unpinned_base(trained_run, tiny_hub, tmp_path):
    with pytest.raises(
        BundleError, match=r"--language 'tiny-org/tiny-vicuna@main': expected <hub id>@<40-hex"
    ):
        export_bundle(trained_run, tmp_path / "b", language=f"{LANGUAGE_ID}@main", cache_dir=tiny_hub.cache)


def test_export_refuses_a_folder_without_lora(trained_run, tiny_hub, tmp_path):
    folder = shutil.copytree(trained_run, tmp_path / "run")
    (folder / "adapter_config.json").unlink()
    with pytest.raises(BundleError, match=r"adapter_config\.json is missing: a bundle holds LoRA and fusion"):
        export_bundle(folder, tmp_path / "b", cache_dir=tiny_hub.cache, local_files_only=True)


def test_export_refuses_another_variant(tiny_model_path, tiny_hub, tmp_path):
    with pytest.raises(BundleError, match=r"config\.json: a fusion_llama model with fusion_variant 'concat'"):
        export_bundle(tiny_model_path, tmp_path / "b", cache_dir=tiny_hub.cache, local_files_only=True)
