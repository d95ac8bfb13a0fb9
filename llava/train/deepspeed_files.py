"""Refuse DeepSpeed checkpoint files that would run code when DeepSpeed's engine unpickles them.

DeepSpeed loads `global_step*/*.pt` with `torch.load(weights_only=False)`: full unpickling, which
runs whatever a tampered file asks for. Before the engine loads a checkpoint, every one of those
files must load under `torch.load(weights_only=True)` with only the types below allowed beyond
torch's own (tensors, containers, numbers, strings): the ones found in ZeRO-2 and ZeRO-3
checkpoints written by this training code (`ZeroStageEnum`, `LossScaler`, `fragment_address`),
and fp16's `DynamicLossScaler`. They are plain data classes and an enum that run no code when
built. A file needing anything else is refused with an error naming the file and the type.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.distributed as dist

from llava.train.resume import DEEPSPEED_TAG_FILE


class UnsafeCheckpointFileError(pickle.UnpicklingError):
    """A DeepSpeed checkpoint file needs a type outside the allow-list to be unpickled."""


def allowed_types() -> list[type]:
    """The types DeepSpeed's checkpoint files may hold beyond torch's weights-only defaults."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def deepspeed_state_files(checkpoint: str | Path) -> list[Path]:
    """The `.pt` files under the DeepSpeed tag (`global_stepN/`) that `checkpoint/latest` names."""
    checkpoint = Path(checkpoint)
    tag = (checkpoint / DEEPSPEED_TAG_FILE).read_text().strip()
    return sorted((checkpoint / tag).rglob("*.pt"))


def _refusal(err: Exception) -> str:
    """Why torch's weights-only unpickler refused a file: the global it would need, or its error."""
    text = str(err)
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return (
            f"unpickling it needs {match.group(1)}, which is not among the types a DeepSpeed checkpoint "
            "holds (see llava/train/deepspeed_files.py)"
        )
    lines = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
    detail = lines[0] if lines else type(err).__name__
    return f"torch's weights-only unpickler rejects it ({detail})"


def check_file(path: Path, allowed: list[type]) -> str | None:
    """None when `path` loads with `weights_only=True` and `allowed`; else why it is refused.
    Files in torch's zip format are memory-mapped, so a large optimizer state is not read twice."""
    with torch.serialization.safe_globals(allowed):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except pickle.UnpicklingError as err:
            return f"{path}: refused, {_refusal(err)}; the file may have been tampered with"
        except (RuntimeError, EOFError) as err:
            return f"{path}: unreadable ({err})"
    return None


def check_deepspeed_checkpoint(checkpoint: str | Path) -> None:
    """Check the DeepSpeed state files of `checkpoint` before DeepSpeed's engine unpickles them.

    Collective when a process group is up: rank r checks every world_size-th file, and every rank
    raises the same `UnsafeCheckpointFileError` if any file is refused.
    """
    files = deepspeed_state_files(checkpoint)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    allowed = allowed_types()
    problems = [p for path in files[rank::world] if (p := check_file(path, allowed)) is not None]
    if distributed and world > 1:
        everyone: list[list[str]] = [[] for _ in range(world)]
        dist.all_gather_object(everyone, problems)
        problems = [p for part in everyone for p in part]
    if problems:
        raise UnsafeCheckpointFileError("; ".join(problems))
