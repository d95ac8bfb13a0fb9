"""What every checkpoint format shares: its entry in the registry (`CheckpointFormat`), what a
load is asked for (`LoadOptions`) and gives back (`Loaded`), and the few steps every format
takes the same way (reading config.json, resolving a location, finding the tokenizer)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llava.cli_errors import UserError
from llava.model.paths import resolve_location
from llava.model.tokenizers import ensure_pad_token

CONFIG_FILE = "config.json"


class ModelBaseError(UserError, ValueError):
    """`--model-base` is missing for a folder of trained parts (LoRA, projector), or given for a
    complete checkpoint."""


@dataclass(frozen=True)
class LoadOptions:
    """How `load_pretrained_model` was asked to load, decided before the format is known."""

    label: str  # the checkpoint as the caller named it (a folder or a hub id), for messages
    dtype: torch.dtype
    attn_implementation: str | None
    quantization: object | None  # a `BitsAndBytesConfig`, or None


@dataclass
class Loaded:
    """What a format's `load` gives back: LLaVA's results before placement, and what was read."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object | None  # None for a text-only LLM
    summary: str  # what was read from where, for the log line after the load
    placed: bool = False  # True when the loader already put the weights on devices (bitsandbytes)


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint format: how to recognise a folder of it and how to load one.

    `detect(folder)` looks at file names and config.json only (cheap, no side effect);
    `load(folder, model_base, options)` returns a `Loaded`. `looks_for` says, in a few words,
    what `detect` looks for, for the error on a folder that no format (or several) claims.
    """

    name: str
    looks_for: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, str | None, LoadOptions], Loaded]


def config_dict(folder: Path) -> dict | None:
    """The folder's config.json as a dict, None when there is none.

    Raises:
        ValueError: config.json is not a JSON object, naming the file.
    """
    file = folder / CONFIG_FILE
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object, found a {type(raw).__name__}")
    return raw


def local_folder(location: str, what: str) -> Path:
    """A local folder, or the hub snapshot of an `org/name` id (see `resolve_location`)."""
    resolved = resolve_location(location, what)
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved))


def load_tokenizer(model_path: Path, model_base: Path | None):
    """The checkpoint's own tokenizer, else its base's."""
    source = model_path if (model_path / "tokenizer_config.json").exists() else model_base
    if source is None:
        raise FileNotFoundError(f"no tokenizer in {model_path} and no --model-base to take one from")
    return ensure_pad_token(AutoTokenizer.from_pretrained(source), str(source))
