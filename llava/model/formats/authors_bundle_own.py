"""Between an authors' bundle and this project's own LoRA checkpoint of the published layer
(`config.json` with `fusion_variant: published`, `adapter_config.json` +
`adapter_model.safetensors`, `non_lora_trainables.safetensors`, tokenizer, image processor),
which `load_pretrained_model(folder, model_base=LLM)` loads.

- `import_bundle`: bundle -> own folder. The tensors are the bundle's, renamed (the scales as
  `[1]`), in the bundle's dtype; the base LLM is the resolved pinned one (adapter_config's
  `base_model_name_or_path`), the tower too (`mm_vision_tower`). The bundle's spec is kept
  beside them in `inverse_llava_source.json`, so that exporting the folder again gives the
  same spec (the own files cannot hold its ids, revisions and recipe fields).
- `own_spec`: the spec of an own folder, derived from its config and adapter config, with the
  fields they cannot say (ids, revisions, `family`, `max_length`, ...) from that source file or
  the caller; where the source file and the folder disagree, the folder was changed: an error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from llava.model.checkpoint_parts import NON_LORA_TRAINABLES
from llava.model.formats.authors_bundle_bases import cache_identity
from llava.model.formats.authors_bundle_files import Bundle
from llava.model.formats.authors_bundle_load import bundle_tokenizer, lora_config, open_bundle
from llava.model.formats.authors_bundle_spec import (
    FORMAT,
    LORA_MODULES,
    SECTIONS,
    BundleError,
    BundleSpec,
    config_fields,
    fusion_names,
    lora_names,
    parse_spec,
    section_defaults,
)
from llava.model.from_backbones import multimodal_config_from_backbones
from llava.model.vision_tower import load_image_processor

logger = logging.getLogger(__name__)

SOURCE_FILE = "inverse_llava_source.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INITIALIZATION_ID = "llava-published-fusion-seeded-init"  # this project's init of the layer
_LORA_TARGET = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)$")


def write_json(path: Path, value) -> None:
    """JSON as their writer writes it: indent 2, sorted keys, UTF-8, a final newline."""
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def new_folder(destination: str | Path) -> tuple[Path, Path]:
    """`(destination, temporary folder beside it)`: the result is written into the temporary
    folder and moved into place whole, so a stopped writer leaves no half folder."""
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} exists; choose a new folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination, Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))


def _own_config(folder: Path):
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "fusion_variant", None) != "published" or config.family_model_type != "llama":
        raise BundleError(
            f"{folder / 'config.json'}: a {config.model_type} model with fusion_variant "
            f"{getattr(config, 'fusion_variant', None)!r}; a bundle holds the published layer "
            "(--fusion_variant published) on a Llama-family LLM"
        )
    if config.image_aspect_ratio not in ("pad", "square"):
        raise BundleError(
            f"{folder / 'config.json'}: image_aspect_ratio {config.image_aspect_ratio!r} has no bundle spelling"
        )
    return config


def read_adapter_config(folder: Path) -> dict:
    """The LoRA settings of an own folder's `adapter_config.json` that a bundle can express:
    plain LoRA (scale alpha / r) on whole layers x modules."""
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: a bundle holds LoRA and fusion tensors only, so only a LoRA run exports"
        )
    raw = json.loads(path.read_text())
    plain = {
        "peft_type": "LORA",
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
    }
    for field, wanted in plain.items():
        if raw.get(field, wanted) != wanted:
            raise BundleError(
                f"{path}: {field} is {raw.get(field)!r}; a bundle's LoRA has {field} {wanted!r}"
            )
    for field in ("rank_pattern", "alpha_pattern", "layers_to_transform"):
        if raw.get(field):
            raise BundleError(
                f"{path}: {field} is set; a bundle's LoRA has one rank and alpha on whole layers"
            )
    alpha = raw.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or alpha != int(alpha):
        raise BundleError(f"{path}: lora_alpha {alpha!r} is not an integer, as their spec needs")
    targets = [_LORA_TARGET.fullmatch(str(name)) for name in raw.get("target_modules") or []]
    if not targets or not all(
        m and m.group(3) in LORA_MODULES and LORA_MODULES[m.group(3)] == m.group(2) for m in targets
    ):
        raise BundleError(
            f"{path}: target_modules {raw.get('target_modules')!r} are not model.layers.N.<block>.<x>_proj names"
        )
    layers = sorted({int(m.group(1)) for m in targets})
    suffixes = [s for s in LORA_MODULES if s in {m.group(3) for m in targets}]
    if len(targets) != len(layers) * len(suffixes):
        raise BundleError(
            f"{path}: target_modules are not the same modules in every layer, as their spec needs"
        )
    return {
        "rank": raw["r"],
        "alpha": int(alpha),
        "dropout": raw.get("lora_dropout", 0.0),
        "layers": layers,
        "suffixes": suffixes,
    }


def _derived_spec(config, lora: dict) -> dict:
    """The spec fields an own folder decides: from its `config` and its adapter settings `lora`;
    the others (ids, revisions, `family`, `max_length`, the recipe's fields) come from elsewhere."""
    fusion, depth = set(config.fusion_layer_ids), config.num_hidden_layers
    unadapted = set(range(depth)) - set(lora["layers"])
    excludes_fusion = fusion <= unadapted
    return {
        "language": {"hidden_size": config.hidden_size, "num_layers": depth},
        "vision": {
            "feature_layers": list(config.mm_vision_select_layer),
            "feature_select": config.mm_vision_select_feature,
            "feature_dim": config.mm_hidden_size,
            "image_size": config.vision_config.image_size,
            "aspect_ratio": config.image_aspect_ratio,
        },
        "fusion": {
            "layers": list(config.fusion_layer_ids),
            "targets": list(config.fusion_targets),
            "initial_scale": float(config.fusion_alpha),
        },
        "adaptation": {
            "method": "lora",
            "rank": lora["rank"],
            "alpha": lora["alpha"],
            "dropout": lora["dropout"],
            "target_suffixes": lora["suffixes"],
            "exclude_fusion_layers": excludes_fusion,
            "excluded_layer_indices": sorted(unadapted - fusion if excludes_fusion else unadapted),
        },
    }


def _parse_pinned(value: str, field: str) -> tuple[str, str]:
    repo_id, separator, revision = value.partition("@")
    if not separator or not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise BundleError(
            f"{field} {value!r}: expected <hub id>@<40-hex commit> (a bundle pins its base models)"
        )
    return repo_id, revision


def recorded_template(folder: Path) -> str | None:
    """The conversation template of the bundle `folder` was imported from, if it was."""
    source = folder / SOURCE_FILE
    return json.loads(source.read_text()).get("conversation_template") if source.is_file() else None


def own_spec(folder: Path, pinned: dict[str, str | None], defaults: dict) -> BundleSpec:
    """The bundle spec of the own LoRA folder `folder`.

    Args:
        pinned: `{"language": "id@commit" or None, "vision": ...}`; None: from the folder's source
            file, else from the Hugging Face cache path of the base it was trained on.
        defaults: `{"id", "family", "max_length"}` when the folder has no source file.
    """
    config, lora = _own_config(folder), read_adapter_config(folder)
    derived = _derived_spec(config, lora)
    source = folder / SOURCE_FILE
    recorded = parse_spec(json.loads(source.read_text())["model"], source).raw if source.is_file() else None
    trained_on = {
        "language": json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path"),
        "vision": config.mm_vision_tower,
    }
    ids = {}
    for section in ("language", "vision"):
        if recorded is not None:
            ids[section] = (recorded[section]["checkpoint"], recorded[section]["revision"])
            if pinned.get(section) and _parse_pinned(pinned[section], f"--{section}") != ids[section]:
                raise BundleError(
                    f"{source}: pins the {section} model to {'@'.join(ids[section])}, not {pinned[section]}; "
                    "the folder was imported from a bundle on that base"
                )
        elif pinned.get(section):
            ids[section] = _parse_pinned(pinned[section], f"--{section}")
        else:
            found = cache_identity(Path(trained_on[section] or "").resolve())
            if found is None:
                raise BundleError(
                    f"{folder}: trained on {trained_on[section]!r}, which names no hub id and revision; "
                    f"give the {section} model as <hub id>@<commit>"
                )
            ids[section] = found
    spec = recorded or _fresh_spec(defaults)
    for section, fields in derived.items():
        for field, value in fields.items():
            if recorded is not None and recorded[section][field] != value:
                raise BundleError(
                    f"{source}: model.{section}.{field} is {recorded[section][field]!r}, but the folder's "
                    f"config or adapter config gives {value!r}: the folder changed since it was imported"
                )
            spec[section][field] = value
    for section, (repo_id, revision) in ids.items():
        spec[section]["checkpoint"], spec[section]["revision"] = _parse_pinned(
            f"{repo_id}@{revision}", section
        )
    return parse_spec(spec, folder / "config.json")


def _fresh_spec(defaults: dict) -> dict:
    """Their defaults for every field the folder does not decide."""
    spec = {name: section_defaults(name) for name in SECTIONS}
    spec["language"].update(family=defaults["family"], max_length=defaults["max_length"])
    spec["fusion"]["initialization_id"] = INITIALIZATION_ID
    return {
        "id": defaults["id"],
        "architecture": "inverse_llava",
        **spec,
        "projector": None,
        "torch_dtype": "bfloat16",
    }


def _own_tensors(bundle: Bundle) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`(non-LoRA trainables, PEFT adapter state)` of the bundle's delta, under this project's names."""
    delta = load_file(str(bundle.delta))
    fusion = {
        own: delta[theirs].reshape(1) if ".fusion.scales." in own else delta[theirs]
        for theirs, own in fusion_names(bundle.spec).items()
    }
    adapter = {peft: delta[theirs] for theirs, peft in lora_names(bundle.spec).items()}
    return fusion, adapter


def import_bundle(location: str | Path, destination: str | Path, **options) -> Path:
    """Convert a bundle (local folder or hub id; `options` as `open_bundle` takes them) into an
    own LoRA checkpoint folder `destination` (new). Every check of loading is made first."""
    bundle, bases = open_bundle(location, **options)
    if not bundle.spec.uses_lora:
        raise BundleError(
            f"{bundle.spec.source}: model.adaptation.method is not lora; an own folder stores LoRA runs"
        )
    destination, work = new_folder(destination)
    try:
        fields = config_fields(bundle.spec)
        config = multimodal_config_from_backbones(
            "fusion_llama", str(bases.language), str(bases.vision), **fields
        )
        config.architectures = ["FusionLlamaForCausalLM"]
        config.save_pretrained(work)
        fusion, adapter = _own_tensors(bundle)
        save_file(fusion, work / NON_LORA_TRAINABLES, metadata={"format": "pt"})
        adapter_config = lora_config(bundle)
        adapter_config.base_model_name_or_path = str(bases.language)
        adapter_config.save_pretrained(work)
        save_file(adapter, work / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        bundle_tokenizer(bases.language).save_pretrained(work)
        load_image_processor(str(bases.vision)).save_pretrained(work)
        source = {
            "format": FORMAT,
            "model": bundle.spec.raw,
            "conversation_template": bundle.config.get("conversation_template"),
            "bundle": {
                "location": str(location),
                "revision": bundle.revision,
                "model_delta_sha256": bundle.delta_sha256,
            },
        }
        write_json(work / SOURCE_FILE, source)
        os.replace(work, destination)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info(
        "converted the bundle %s into %s (load it with model_base=%s)", location, destination, bases.language
    )
    return destination
