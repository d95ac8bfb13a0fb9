"""The authors' 2026 bundle (`invllava-hub-release-v1`, their published 7B model) as a checkpoint
format of the registry: a folder with `inverse_llava_config.json` (no config.json), loaded by
`llava.model.formats.authors_bundle_load`. The bundle pins its base models, so no `model_base`
is needed; one given is used as a local folder for the pinned LLM (checked like one).
"""

from __future__ import annotations

from pathlib import Path

from llava.model.formats.authors_bundle_files import is_authors_bundle
from llava.model.formats.authors_bundle_load import read_authors_bundle
from llava.model.formats.authors_bundle_spec import CONFIG_FILE, BundleError
from llava.model.formats.base import CheckpointFormat, Loaded, LoadOptions

NAME = "authors-bundle"


def detect(folder: Path) -> bool:
    return is_authors_bundle(folder)


def load(folder: Path, model_base: str | None, options: LoadOptions) -> Loaded:
    if options.quantization is not None:
        raise BundleError(f"{folder}: 4/8-bit loading of an authors' bundle is not supported")
    loaded = read_authors_bundle(
        folder, language=model_base, dtype=options.dtype, attn_implementation=options.attn_implementation
    )
    # LLaVA's loader reads the context length from `max_sequence_length`: the spec's, as
    # `load_authors_bundle` gives it.
    loaded.model.config.max_sequence_length = loaded.context_len
    return Loaded(loaded.model, loaded.tokenizer, loaded.image_processor, loaded.report.describe())


FORMAT = CheckpointFormat(
    name=NAME,
    looks_for=f"{CONFIG_FILE} (the authors' invllava-hub-release-v1 bundle), beside model_delta.safetensors",
    detect=detect,
    load=load,
)
