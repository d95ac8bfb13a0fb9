"""The two base models a bundle pins (`model.language`, `model.vision`: hub id + revision),
found in the Hugging Face cache (`models--org--name/snapshots/<revision>`, downloaded unless
offline) or given as local folders, and checked to be the ones recorded.

A local folder that lies in a Hugging Face cache names its id and revision by its path: both
must be the recorded ones. Any other local folder cannot say what it is, so it is taken on the
user's word, with a warning; its config must still give the recorded shapes (the LLM's hidden
size and depth, the tower's feature width and image size), as for a folder from the hub.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig

from llava.model.formats.authors_bundle_files import hub_error
from llava.model.formats.authors_bundle_spec import BundleError, BundleSpec
from llava.model.paths import resolve_location
from llava.model.vision_tower import read_vision_config

logger = logging.getLogger(__name__)

HF_CONFIG = "config.json"


@dataclass(frozen=True)
class Bases:
    """Local folders of the bundle's LLM and tower, with the LLM's config."""

    language: Path
    vision: Path
    llm_config: object


def cache_identity(folder: Path) -> tuple[str, str] | None:
    """`(hub id, revision)` of a snapshot folder of a Hugging Face cache, None for another folder."""
    snapshots, repo = folder.parent, folder.parent.parent
    if snapshots.name != "snapshots" or not repo.name.startswith("models--"):
        return None
    return repo.name.removeprefix("models--").replace("--", "/"), folder.name


def pinned_snapshot(
    repo_id: str, revision: str, what: str, cache_dir=None, local_files_only: bool = False
) -> Path:
    """The snapshot folder of `repo_id` at `revision` (from the cache; downloaded unless offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise hub_error(repo_id, revision, what, cache_dir, error) from error


def _local(folder: str | Path, section: str, spec: BundleSpec) -> Path:
    """A user-given local folder for the `section` base, refused when its cache path names
    another model or revision than the bundle's."""
    path = Path(resolve_location(str(folder), f"{section} model"))
    recorded = spec.pinned(section)
    found = cache_identity(path.resolve())
    if found is None:
        logger.warning(
            "%s: a local folder, used as %s@%s on your word (only its config's shapes are checked)",
            path,
            *recorded,
        )
    elif found != recorded:
        raise BundleError(
            f"{path}: is {found[0]}@{found[1]} (by its Hugging Face cache path), but {spec.source} pins "
            f"model.{section} to {recorded[0]}@{recorded[1]}"
        )
    return path


def _check_shapes(spec: BundleSpec, language: Path, vision: Path):
    """The configs of the two folders give the spec's shapes; returns the LLM's config."""
    llm_config = AutoConfig.from_pretrained(language)
    recorded = spec.section("language")
    found = {
        "model_type": (llm_config.model_type, "llama"),  # their loader builds the Llama architecture only
        "hidden_size": (llm_config.hidden_size, recorded["hidden_size"]),
        "num_hidden_layers": (llm_config.num_hidden_layers, recorded["num_layers"]),
    }
    for field, (value, wanted) in found.items():
        if value != wanted:
            raise BundleError(
                f"{language / HF_CONFIG}: {field} is {value!r}, but {spec.source} records {wanted!r} for "
                f"{recorded['checkpoint']}: another base model"
            )
    tower = read_vision_config(str(vision))
    recorded = spec.section("vision")
    width = tower.hidden_size * len(recorded["feature_layers"])
    depth = tower.num_hidden_layers
    if not all(-(depth + 1) <= layer <= depth for layer in recorded["feature_layers"]):
        raise BundleError(
            f"{vision / HF_CONFIG}: a tower of {depth} layers has no hidden states "
            f"{recorded['feature_layers']} (model.vision.feature_layers in {spec.source})"
        )
    found = {
        "hidden_size x feature layers": (width, recorded["feature_dim"]),
        "image_size": (getattr(tower, "image_size", None), recorded["image_size"]),
    }
    for field, (value, wanted) in found.items():
        if value != wanted:
            raise BundleError(
                f"{vision / HF_CONFIG}: {field} is {value!r}, but {spec.source} records {wanted!r} for "
                f"{recorded['checkpoint']}: another vision tower"
            )
    return llm_config


def resolve_bases(
    spec: BundleSpec,
    language: str | Path | None = None,
    vision: str | Path | None = None,
    cache_dir=None,
    local_files_only: bool = False,
) -> Bases:
    """The bundle's base LLM and tower: the given local folders, else the pinned revisions from
    the Hugging Face cache (or the hub, online).

    Raises:
        BundleError: a pinned revision that cannot be found, a cache folder of another model or
            revision, or a config that disagrees with the recorded shapes.
    """
    folders = {}
    for section, given in (("language", language), ("vision", vision)):
        if given is not None:
            folders[section] = _local(given, section, spec)
        else:
            repo_id, revision = spec.pinned(section)
            folders[section] = pinned_snapshot(
                repo_id, revision, f"{section} model", cache_dir, local_files_only
            )
    llm_config = _check_shapes(spec, folders["language"], folders["vision"])
    return Bases(folders["language"], folders["vision"], llm_config)
