"""Loading an authors' bundle (`invllava-hub-release-v1`) as this project's model.

From a local folder or a hub id (the bundle itself, then its two pinned base models, resolved
through the Hugging Face cache; `HF_HUB_OFFLINE=1` or `local_files_only=True` never goes online),
or with local folders given for the base models. After the checks of
`authors_bundle_files` and `authors_bundle_bases`, the model is built as the spec says:

- `FusionLlamaForCausalLM` on the pinned LLM and tower, the published layer
  (`fusion_variant="published"`) in `model.fusion.layers` for `model.fusion.targets`;
- the tower's hidden states of `model.vision.feature_layers`, patches only (`feature_select`
  `patch`) or with CLS, `model.vision.aspect_ratio` for padding; no projector (theirs has none);
- LoRA of rank `model.adaptation.rank` and scale `alpha / rank` on `target_suffixes` of every
  layer but the excluded and (by default) the fusion layers, merged into the weights unless
  `merge_lora=False` (their default execution keeps it unmerged: equal up to rounding);
- the tokenizer as theirs loads it (`use_fast=False`, pad falling back to unk), the tower's
  image processor.

Every fusion and LoRA tensor of the delta is loaded; a parameter that no file provides is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from llava.model.formats.authors_bundle_bases import Bases, resolve_bases
from llava.model.formats.authors_bundle_files import Bundle, check_tensors, read_bundle, resolve_bundle
from llava.model.formats.authors_bundle_spec import (
    BundleError,
    config_fields,
    expected_shapes,
    fusion_names,
    lora_module,
    lora_names,
)
from llava.model.from_backbones import build_from_backbones
from llava.model.load_report import LoadReport
from llava.model.placement import resolve_device
from llava.model.tokenizers import ensure_pad_token
from llava.model.vision_tower import load_image_processor
from llava.model.weights import copy_checked

logger = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedBundle:
    """A bundle loaded as this project's model, with what was read from where."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    bundle: Bundle
    bases: Bases
    report: LoadReport

    @property
    def context_len(self) -> int:
        """The spec's `model.language.max_length`: the length their model was used with."""
        return self.bundle.spec.section("language")["max_length"]


def open_bundle(
    location: str | Path,
    *,
    revision: str | None = None,
    language: str | Path | None = None,
    vision: str | Path | None = None,
    cache_dir=None,
    local_files_only: bool = False,
) -> tuple[Bundle, Bases]:
    """The checked bundle and its checked base models, nothing built yet (`verify` stops here)."""
    root, hub_revision = resolve_bundle(location, revision, cache_dir, local_files_only)
    bundle = read_bundle(root, hub_revision)
    bases = resolve_bases(bundle.spec, language, vision, cache_dir, local_files_only)
    check_tensors(bundle, expected_shapes(bundle.spec, bases.llm_config))
    return bundle, bases


def lora_config(bundle: Bundle):
    """PEFT's config of the spec's LoRA: its rank, alpha and dropout on the target modules of the
    adapted layers, named in full (`model.layers.3.mlp.up_proj`)."""
    from peft import LoraConfig

    spec = bundle.spec
    adaptation = spec.section("adaptation")
    return LoraConfig(
        r=adaptation["rank"],
        lora_alpha=adaptation["alpha"],  # PEFT's scale alpha / r is theirs (adaptation.py)
        lora_dropout=float(adaptation["dropout"]),
        target_modules=[
            lora_module(layer, suffix) for layer in spec.lora_layers for suffix in spec.lora_suffixes
        ],
        bias="none",
        task_type="CAUSAL_LM",
    )


def _attach_lora(model, bundle: Bundle, delta: dict[str, torch.Tensor], merge: bool):
    """The model with the delta's LoRA tensors in PEFT layers (in the model's dtype, as theirs),
    merged unless `merge` is False."""
    from peft import get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(model, lora_config(bundle), autocast_adapter_dtype=False)
    state = {peft: delta[theirs] for theirs, peft in lora_names(bundle.spec).items()}
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = sorted(result.unexpected_keys)
    untrained = sorted(k for k in result.missing_keys if "lora_" in k)
    if unexpected or untrained:
        raise BundleError(
            f"{bundle.delta}: LoRA tensors and layers disagree: {len(unexpected)} without a layer "
            f"(e.g. {unexpected[:3]}), {len(untrained)} layer weight(s) without a tensor (e.g. {untrained[:3]})"
        )
    return peft_model.merge_and_unload() if merge else peft_model


def build_bundle_model(
    bundle: Bundle,
    bases: Bases,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    merge_lora: bool = True,
) -> tuple[torch.nn.Module, LoadReport]:
    """This project's model of the bundle's spec on `bases`, with the delta loaded."""
    model, report = build_from_backbones(
        "fusion_llama",
        str(bases.language),
        str(bases.vision),
        dtype=dtype,
        attn_implementation=attn_implementation,
        **config_fields(bundle.spec),
    )
    delta = load_file(str(bundle.delta))
    params = dict(model.named_parameters())
    fusion = fusion_names(bundle.spec)
    for theirs, own in fusion.items():
        value = delta[theirs].reshape(1) if ".fusion.scales." in own else delta[theirs]  # [] there, [1] here
        copy_checked(params[own], value, theirs, bundle.delta)
    loaded = list(fusion.values())
    if bundle.spec.uses_lora:
        model = _attach_lora(model, bundle, delta, merge_lora)
        loaded += list(lora_names(bundle.spec).values())
    report.record(bundle.delta, loaded)
    if report.missing:
        raise BundleError(
            f"{bundle.delta}: {len(report.missing)} parameter(s) of the model would stay newly initialised, "
            f"e.g. {report.missing[:3]}"
        )
    return model, report


def bundle_tokenizer(folder: Path):
    """The LLM's tokenizer as their loader takes it: `use_fast=False`, pad falling back to unk."""
    return ensure_pad_token(AutoTokenizer.from_pretrained(folder, use_fast=False), str(folder))


def read_authors_bundle(
    location: str | Path,
    *,
    revision: str | None = None,
    language: str | Path | None = None,
    vision: str | Path | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    merge_lora: bool = True,
    cache_dir=None,
    local_files_only: bool = False,
) -> LoadedBundle:
    """Check and load a bundle (see the module docstring), on the CPU, in eval mode.

    Args:
        location: the bundle's local folder or hub id (`revision`: its hub revision).
        language, vision: local folders to use instead of the pinned base models.
        dtype: default the spec's `torch_dtype`.
        cache_dir, local_files_only: as `huggingface_hub.snapshot_download` takes them.

    Raises:
        BundleError: naming the file and field of the first failed check.
    """
    bundle, bases = open_bundle(
        location,
        revision=revision,
        language=language,
        vision=vision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    dtype = dtype or _DTYPES[bundle.spec.raw["torch_dtype"]]
    model, report = build_bundle_model(bundle, bases, dtype, attn_implementation, merge_lora)
    logger.info("loaded the bundle %s (%s); %s", location, bundle.spec.raw["id"], report.describe())
    return LoadedBundle(
        model.eval(),
        bundle_tokenizer(bases.language),
        load_image_processor(str(bases.vision)),
        bundle,
        bases,
        report,
    )


def load_authors_bundle(
    location: str | Path,
    *,
    device: str | None = None,
    **options,
):
    """`load_pretrained_model`'s four results for a bundle: `(tokenizer, model, image_processor,
    context_len)`, the model in eval mode on `device` (None: CUDA when available, else the CPU).
    `options` are `read_authors_bundle`'s."""
    loaded = read_authors_bundle(location, **options)
    loaded.model.to(device=resolve_device(device))
    return loaded.tokenizer, loaded.model, loaded.image_processor, loaded.context_len
