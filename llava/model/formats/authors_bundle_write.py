"""Writing an authors' bundle (`invllava-hub-release-v1`) that their own loader reads, from this
project's LoRA checkpoint of the published layer (`export_bundle`).

The files, as their writer (`convert_champion_checkpoint`, `src/invllava/model/
champion_checkpoint.py` at b1d7ab31fd8228ad7912bb697e1c4e77e2e4ef13) writes them, into a
temporary folder moved into place whole:

- `model_delta.safetensors`: the fusion and LoRA tensors under their names, in the spec's
  `torch_dtype` (bf16), the scales 0-dim; no base weight;
- `metadata.json`: `format`, `source_format`, `model_delta_sha256`, `model_delta_size_bytes`,
  `tensor_count`, `tensor_names` (sorted), `source_files` (sha256 and size of the files read),
  `base_model`, `base_model_revision`, `vision_model`, `vision_model_revision`, and
  `upstream_base_projection_verification`: the fusion layers' base q/k/v/o of the LLM the run
  was trained on, compared tensor for tensor with the pinned revision's (`status: exact`);
- `inverse_llava_config.json`: `format`, `model` (the full spec), `weights`, `metadata`,
  `conversation_template`;
- `README.md` (a model card), `COMPLETE` (`complete\\n`), and last `checksums.sha256` (every
  other file, sorted by name).

JSON is written as theirs: indent 2, sorted keys, a final newline. The folder is read back with
every check of `authors_bundle_files` before it is moved into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from llava.model.checkpoint_parts import NON_LORA_TRAINABLES
from llava.model.formats.authors_bundle_bases import pinned_snapshot
from llava.model.formats.authors_bundle_files import checksum_lines, read_bundle, sha256_file
from llava.model.formats.authors_bundle_own import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    new_folder,
    own_spec,
    recorded_template,
    write_json,
)
from llava.model.formats.authors_bundle_spec import (
    CHECKSUMS_FILE,
    COMPLETE_FILE,
    COMPLETE_TEXT,
    CONFIG_FILE,
    CONVERSATION_TEMPLATE,
    DELTA_FILE,
    FORMAT,
    METADATA_FILE,
    README_FILE,
    BundleError,
    BundleSpec,
    fusion_names,
    lora_names,
)
from llava.model.paths import is_hub_id
from llava.model.weights import load_pickled_weights, model_weight_files

logger = logging.getLogger(__name__)

SOURCE_FORMAT = "llava-published-fusion-lora-checkpoint-v1"  # this project's LoRA run folder
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def seal_bundle(
    destination: str | Path,
    spec: BundleSpec,
    delta: dict[str, torch.Tensor],
    metadata: dict,
    model_card: str,
    conversation_template: str = CONVERSATION_TEMPLATE,
) -> Path:
    """Write a bundle of `spec` holding `delta` (their names, final dtypes) into the new folder
    `destination`; `metadata`: its fields other than those derived from the delta."""
    destination, work = new_folder(destination)
    try:
        save_file({name: tensor.contiguous() for name, tensor in delta.items()}, work / DELTA_FILE)
        derived = {
            "format": FORMAT,
            "model_delta_sha256": sha256_file(work / DELTA_FILE),
            "model_delta_size_bytes": (work / DELTA_FILE).stat().st_size,
            "tensor_count": len(delta),
            "tensor_names": sorted(delta),
        }
        write_json(work / METADATA_FILE, {**metadata, **derived})
        config = {
            "format": FORMAT,
            "model": spec.raw,
            "weights": DELTA_FILE,
            "metadata": METADATA_FILE,
            "conversation_template": conversation_template,
        }
        write_json(work / CONFIG_FILE, config)
        (work / README_FILE).write_text(model_card, encoding="utf-8")
        (work / COMPLETE_FILE).write_text(COMPLETE_TEXT, encoding="utf-8")
        listed = sorted(item.name for item in work.iterdir())
        (work / CHECKSUMS_FILE).write_text(checksum_lines(work, listed), encoding="utf-8")
        read_bundle(work)
        os.chmod(work, 0o755)
        os.replace(work, destination)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return destination


def _base_tensors(folder: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """`names` of the model weights in `folder` (safetensors, or weights-only pickles)."""
    found: dict[str, torch.Tensor] = {}
    for file in model_weight_files(folder):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                found.update({name: handle.get_tensor(name) for name in names if name in handle.keys()})
        else:
            state = load_pickled_weights(file)
            found.update({name: state[name] for name in names if name in state})
    missing = [name for name in names if name not in found]
    if missing:
        raise BundleError(f"{folder}: holds no {missing[:3]} (is it the LLM's checkpoint?)")
    return found


def _trained_on(folder: Path, repo_id: str, pinned: Path) -> Path:
    """The local folder of the LLM the run in `folder` was trained on."""
    given = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""
    if Path(given).expanduser().is_dir():
        return Path(given).expanduser()
    if given == repo_id and is_hub_id(given):
        logger.warning("%s: trained on the hub id %s, taken as the pinned revision", folder, given)
        return pinned
    raise BundleError(
        f"{folder / ADAPTER_CONFIG}: base_model_name_or_path {given!r} is not a local folder, so the base the "
        "run was trained on cannot be compared with the pinned one"
    )


def verify_base(folder: Path, spec: BundleSpec, cache_dir=None, local_files_only: bool = False) -> dict:
    """Their `upstream_base_projection_verification`: the fusion layers' q/k/v/o, which the
    bundle omits, are the pinned LLM's. Returns the record; a difference is an error."""
    repo_id, revision = spec.pinned("language")
    pinned = pinned_snapshot(repo_id, revision, "language model", cache_dir, local_files_only)
    trained = _trained_on(folder, repo_id, pinned)
    names = [
        f"model.layers.{layer}.self_attn.{proj}_proj.weight"
        for layer in spec.fusion_layers
        for proj in "qkvo"
    ]
    upstream, used = _base_tensors(pinned, names), _base_tensors(trained, names)
    unequal = [name for name in names if not torch.equal(upstream[name], used[name])]
    if unequal:
        raise BundleError(
            f"{trained}: the run's base LLM differs from {repo_id}@{revision} in {unequal[:3]}: the bundle would "
            "load on other base weights than it was trained on"
        )
    return {
        "status": "exact",
        "base_model": repo_id,
        "base_model_revision": revision,
        "tensor_names": sorted(f"language_model.{name}" for name in names),
        "omitted_from_release": True,
    }


def bundle_delta(folder: Path, spec: BundleSpec) -> dict[str, torch.Tensor]:
    """The own folder's fusion and LoRA tensors under the bundle's names, in the spec's dtype;
    every tensor the spec needs and no other."""
    dtype = _DTYPES[spec.raw["torch_dtype"]]
    delta = {}
    for file, names in ((NON_LORA_TRAINABLES, fusion_names(spec)), (ADAPTER_WEIGHTS, lora_names(spec))):
        state = load_file(str(folder / file))
        wanted = {own: theirs for theirs, own in names.items()}
        unknown, missing = sorted(set(state) - set(wanted)), sorted(set(wanted) - set(state))
        if unknown or missing:
            raise BundleError(
                f"{folder / file}: its tensors are not the spec's: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unknown)} not in a bundle (e.g. {unknown[:3]})"
            )
        for own, tensor in state.items():
            delta[wanted[own]] = (tensor.reshape(()) if ".fusion.scales." in own else tensor).to(dtype)
    return delta


def _model_card(spec: BundleSpec, source: Path) -> str:
    language, vision = ("@".join(spec.pinned(section)) for section in ("language", "vision"))
    fusion = spec.section("fusion")
    return (
        f"# {spec.raw['id']}\n\n"
        "Inverse-LLaVA (arXiv 2508.12466) in the authors' `invllava-hub-release-v1` bundle format: the "
        f"published fusion layer in layers {fusion['layers']} on targets {fusion['targets']}, plus LoRA, as "
        f"a bf16 delta on the pinned base models, whose weights are not included:\n\n- LLM: `{language}`\n"
        f"- vision tower: `{vision}`\n\nExported from `{source.name}` (a LoRA run of this repository, "
        "`--fusion_variant published`). Load it with the authors' `invllava.release.load_pretrained`, or "
        "here with `llava.model.formats.authors_bundle_load.load_authors_bundle` (docs/checkpoints.md). "
        "The base models keep their own licenses.\n"
    )


def export_bundle(
    checkpoint: str | Path,
    destination: str | Path,
    *,
    language: str | None = None,
    vision: str | None = None,
    model_id: str | None = None,
    family: str = "vicuna",
    max_length: int = 2048,
    conversation_template: str | None = None,
    cache_dir=None,
    local_files_only: bool = False,
) -> Path:
    """Export the own LoRA checkpoint folder `checkpoint` (published layer) as a bundle.

    Args:
        language, vision: the base models as `<hub id>@<40-hex commit>`; default: from the
            folder's `inverse_llava_source.json`, else from the Hugging Face cache paths of the
            bases the run was trained on.
        model_id, family, max_length: spec fields the folder cannot say (when it was not imported
            from a bundle): default the destination's name, `vicuna`, 2048.
        conversation_template: default the imported bundle's, else `vicuna_v1`.

    Raises:
        BundleError: a folder a bundle cannot express, unpinned bases, or a run whose base LLM is
            not the pinned one.
    """
    folder = Path(checkpoint)
    defaults = {"id": model_id or Path(destination).name, "family": family, "max_length": max_length}
    spec = own_spec(folder, {"language": language, "vision": vision}, defaults)
    verification = verify_base(folder, spec, cache_dir, local_files_only)
    pinned_snapshot(*spec.pinned("vision"), "vision model", cache_dir, local_files_only)
    sources = [NON_LORA_TRAINABLES, ADAPTER_WEIGHTS, ADAPTER_CONFIG, "config.json"]
    metadata = {
        "source_format": SOURCE_FORMAT,
        "source_files": {
            name: {"sha256": sha256_file(folder / name), "size_bytes": (folder / name).stat().st_size}
            for name in sorted(sources)
        },
        "base_model": spec.pinned("language")[0],
        "base_model_revision": spec.pinned("language")[1],
        "vision_model": spec.pinned("vision")[0],
        "vision_model_revision": spec.pinned("vision")[1],
        "upstream_base_projection_verification": verification,
    }
    delta = bundle_delta(folder, spec)
    template = conversation_template or recorded_template(folder) or CONVERSATION_TEMPLATE
    path = seal_bundle(destination, spec, delta, metadata, _model_card(spec, folder), template)
    logger.info("exported %s as the bundle %s (%d tensors)", folder, path, len(delta))
    return path
