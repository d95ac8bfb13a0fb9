"""Reading weight files written by other code: safetensors, and pickled `.bin` files.

A `.bin` file is a pickle, which can run arbitrary code when it is loaded. Every pickle this
project reads goes through `load_pickled_weights`: `torch.load(weights_only=True,
map_location="cpu")`, which unpickles tensors and plain containers only; a file that needs more
(a class instance, a function) is refused with `UnsafeWeightsError` naming it, never retried
with `weights_only=False`. Folders that transformers' `from_pretrained` reads itself are checked
first with `check_folder_pickles` (a `map_location="meta"` load: the pickle's structure, no
tensor data), so that the refusal names the file there too.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

logger = logging.getLogger(__name__)

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class UnsafeWeightsError(pickle.UnpicklingError):
    """A pickled weight file holds more than tensors and containers (refused, never executed)."""


def _refusal(path: Path, error: Exception) -> UnsafeWeightsError:
    found = _UNSUPPORTED_GLOBAL.search(str(error))
    culprit = f"it holds a {found.group(1)} object" if found else str(error).splitlines()[0]
    return UnsafeWeightsError(
        f"{path}: refused: unpickling it needs more than weights_only=True allows ({culprit}). "
        "Only tensors are read from pickles; re-save the tensors (as safetensors) with code you trust"
    )


def _checked_state(state, path: Path) -> dict[str, torch.Tensor]:
    """`state` as a `{name: tensor}` dict, or an error naming the file and the first bad entry."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of name -> tensor, found a {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor (is it a weight file?)"
            )
    return dict(state)


def load_pickled_weights(path: str | Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a pickled (`torch.save`d) state dict, read with `weights_only=True`.

    Raises:
        UnsafeWeightsError: the pickle needs more than `weights_only` allows (names the file and
            the object's class).
        ValueError: the file is not a flat `{name: tensor}` dict (names the file and the entry).
    """
    path = Path(path)
    try:
        state = torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as error:
        raise _refusal(path, error) from error
    return _checked_state(state, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or of a pickled `.bin` (see `load_pickled_weights`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path}: not a readable safetensors file (truncated or corrupt?): {error}"
            ) from error
    if path.suffix == ".bin":
        return load_pickled_weights(path)
    raise ValueError(f"{path}: unknown weight file type (expected .safetensors or .bin)")


def _shards(folder: Path, index: str, single: str) -> list[Path]:
    index_file = folder / index
    if index_file.exists():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    return [folder / single] if (folder / single).exists() else []


def model_weight_files(folder: str | Path) -> list[Path]:
    """The files holding a folder's model weights, as transformers picks them: safetensors
    (single or sharded with an index) before pickles (single or sharded); empty when none."""
    folder = Path(folder)
    return _shards(folder, SAFETENSORS_INDEX, SAFETENSORS_SINGLE) or _shards(
        folder, PICKLE_INDEX, PICKLE_SINGLE
    )


def check_folder_pickles(folder: str | Path) -> None:
    """Refuse (with `UnsafeWeightsError` naming the file) a folder whose pickled model weights
    need more than `weights_only`, before transformers reads them; reads no tensor data."""
    for file in model_weight_files(folder):
        if file.suffix == ".bin":
            load_pickled_weights(file, map_location="meta")


def checkpoint_keys(folder: str | Path) -> set[str]:
    """The tensor names of a folder's model weights (from the index when sharded)."""
    folder = Path(folder)
    for index in (SAFETENSORS_INDEX, PICKLE_INDEX):
        if (folder / index).exists():
            return set(json.loads((folder / index).read_text())["weight_map"])
    keys: set[str] = set()
    for file in model_weight_files(folder):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                keys |= set(f.keys())
        else:
            keys |= set(load_pickled_weights(file, map_location="meta"))
    return keys


def copy_checked(target: torch.Tensor, value: torch.Tensor, key: str, source: str | Path) -> None:
    """`target.copy_(value)` in `target`'s dtype, refusing a shape mismatch (no broadcasting).

    Raises:
        ValueError: naming `source` (the file), `key` and both shapes.
    """
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(
            f"{source}: {key} has shape {tuple(value.shape)}, but the model's parameter has shape "
            f"{tuple(target.shape)} (was the checkpoint trained with another config?)"
        )
    with torch.no_grad():
        target.copy_(value.to(target.dtype))
