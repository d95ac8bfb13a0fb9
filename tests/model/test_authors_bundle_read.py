"""Reading the authors' bundle (`invllava-hub-release-v1`): bundles written by hand from the
format's facts load, from a local folder or a hub id resolved offline through a Hugging Face
cache, as the model they describe. Refusals: tests/model/test_authors_bundle_refusals.py;
writing and conversion: tests/model/test_authors_bundle_write.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.formats import authors_bundle
from llava.model.formats.authors_bundle_files import is_authors_bundle
from llava.model.formats.authors_bundle_load import load_authors_bundle, read_authors_bundle
from llava.model.formats.base import LoadOptions
from llava.model.published_fusion import PublishedFusion
from tests.model.authors_bundle_helpers import (
    BUNDLE_ID,
    add_to_cache,
    random_delta,
    reference_model,
    revision_of,
    tiny_spec,
    write_bundle,
)
from tests.model.test_published_fusion import model_tolerance

PROMPT = torch.tensor([[1, 40, IMAGE_TOKEN_INDEX, 41, 42, 43]])
# The canonical layout (tower layer -1, q/k/v, LoRA on every non-fusion layer), one with the
# HD tower layers (-2, -1), two targets and a layer without LoRA, and one without LoRA at all.
SPECS = {
    "canonical": {},
    "hd_qv_excluded": {"feature_layers": (-2, -1), "targets": ("q", "v"), "excluded": (2,)},
    "frozen": {"method": "frozen"},
}


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _logits(model, images) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROMPT, images=images).logits  # [1, T, V]


@pytest.fixture
def bundle(tiny_hub, tmp_path):
    """`bundle(name)` -> (folder, spec, delta) of a hand-written bundle of `SPECS[name]`."""

    def _bundle(name: str = "canonical"):
        spec = tiny_spec(tiny_hub, **SPECS[name])
        delta = random_delta(spec, AutoConfig.from_pretrained(tiny_hub.language))
        return write_bundle(tmp_path / name, spec, delta), spec, delta

    return _bundle


def _read(folder, hub, **options):
    return read_authors_bundle(
        folder,
        dtype=torch.float32,
        attn_implementation="eager",
        cache_dir=hub.cache,
        local_files_only=True,
        **options,
    )


@pytest.mark.parametrize("name", list(SPECS))
def test_loads_as_the_model_it_describes(tiny_hub, bundle, name):
    """The loaded model's logits are those of the model put together by hand from the facts
    (names, the scales' shape, `W + (alpha / r) B A`), in fp32: the same products, summed in
    other orders (`model_tolerance`)."""
    folder, spec, delta = bundle(name)
    loaded = _read(folder, tiny_hub)
    model = loaded.model
    assert model.config.fusion_variant == "published"
    assert model.config.fusion_layer_ids == [0] and model.config.fusion_targets == spec["fusion"]["targets"]
    assert model.config.mm_vision_select_layer == spec["vision"]["feature_layers"]
    assert model.config.mm_hidden_size == spec["vision"]["feature_dim"]
    assert isinstance(model.model.layers[0].self_attn.fusion, PublishedFusion)
    assert not hasattr(model.model, "mm_projector")  # theirs has no projector
    images = _images()
    expected = _logits(reference_model(tiny_hub, spec, delta), images)
    logits = _logits(model, images)
    assert (logits - expected).abs().max() <= model_tolerance(model, expected, logits.shape[1])
    # what the test can tell apart: without LoRA, or with another image, the logits move
    without_lora = {k: v for k, v in delta.items() if "lora_" not in k}
    if len(without_lora) < len(delta):
        assert (_logits(reference_model(tiny_hub, spec, without_lora), images) - expected).abs().max() > 1e-3
    assert (_logits(model, _images(1)) - logits).abs().max() > 1e-3
    assert loaded.report.missing == []
    assert loaded.report.loaded[str(folder / "model_delta.safetensors")]  # the delta's tensors, by name


def test_unmerged_lora_gives_the_merged_logits(tiny_hub, bundle):
    """Their default execution keeps LoRA unmerged: the same sums, grouped otherwise."""
    folder, _, _ = bundle()
    merged, unmerged = _read(folder, tiny_hub).model, _read(folder, tiny_hub, merge_lora=False).model
    assert hasattr(unmerged, "peft_config")
    images = _images()
    expected, logits = _logits(merged, images), _logits(unmerged, images)
    assert (logits - expected).abs().max() <= model_tolerance(merged, expected, logits.shape[1])


def test_bf16_by_default_and_llava_results(tiny_hub, bundle):
    """The spec's torch_dtype by default; `load_authors_bundle` gives `load_pretrained_model`'s
    four results, the context length the spec's `language.max_length`, the tokenizer's pad its
    own (else unk, as their loader)."""
    folder, _, _ = bundle()
    tokenizer, model, processor, context_len = load_authors_bundle(
        folder, device="cpu", cache_dir=tiny_hub.cache, local_files_only=True
    )
    assert model.dtype == torch.bfloat16 and not model.training
    assert context_len == 2048
    assert tokenizer.pad_token is not None
    assert processor.crop_size["height"] == 32


def test_detected_by_its_config_file_only(tiny_hub, bundle, tiny_checkpoints):
    folder, _, _ = bundle()
    assert is_authors_bundle(folder) and authors_bundle.detect(folder)
    assert not is_authors_bundle(tiny_checkpoints[0]) and not is_authors_bundle(folder / "COMPLETE")


def test_the_registry_entry_loads_with_the_dispatchers_options(tiny_hub, bundle, monkeypatch):
    """`FORMAT.load(folder, model_base, options)`: a model_base is the pinned LLM's local folder."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tiny_hub.cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    folder, _, _ = bundle()
    options = LoadOptions(
        label=str(folder), dtype=torch.float32, attn_implementation="eager", quantization=None
    )
    loaded = authors_bundle.FORMAT.load(folder, str(tiny_hub.language), options)
    assert loaded.model.dtype == torch.float32 and "model_delta.safetensors" in loaded.summary


def test_hub_id_resolves_offline_from_the_cache(tiny_hub, bundle, tmp_path):
    """The bundle itself as a hub id, at a revision or at main, from the cache only."""
    folder, _, _ = bundle()
    revision = revision_of("tiny-bundle")
    add_to_cache(tiny_hub.cache, BUNDLE_ID, revision, folder)
    loaded = _read(BUNDLE_ID, tiny_hub, revision=revision)
    assert loaded.bundle.revision == revision
    assert (
        loaded.bundle.root == tiny_hub.cache / "models--tiny-org--tiny-inverse-llava" / "snapshots" / revision
    )
    images = _images()
    assert torch.equal(_logits(loaded.model, images), _logits(_read(folder, tiny_hub).model, images))


def test_cli_verify_offline_with_the_environment(tiny_hub, bundle):
    """`HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` alone (no flag) resolve the bundle's hub id at main
    and both pinned bases; the command makes every check of loading."""
    folder, _, _ = bundle()
    repo_id = f"{BUNDLE_ID}-cli"
    add_to_cache(tiny_hub.cache, repo_id, revision_of("tiny-bundle-cli"), folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tiny_hub.cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "llava.tools.invllava_bundle", "verify", repo_id],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.startswith("OK ")
        and f"tiny-org/tiny-vicuna@{tiny_hub.language_revision}" in result.stdout
    )
