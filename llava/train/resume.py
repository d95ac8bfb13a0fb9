"""What a `checkpoint-N` folder promises, and the checks that let a run resume from it.

A checkpoint is written into a temporary folder `.tmp-checkpoint-N` beside its final place (every
rank writes there), its files are flushed to disk, `checkpoint_manifest.json` is written last
(every file's size and the run's flags), and the folder is then renamed to `checkpoint-N`. So a
folder named `checkpoint-N` is complete by construction; `checkpoint_problem` checks it again
against its manifest (a file deleted or truncated afterwards, or a folder from another writer).

Resuming refuses, naming the file or the flag:
- a checkpoint that is incomplete (`--resume_from_checkpoint latest` skips those, with a warning);
- a checkpoint without the optimizer, scheduler, RNG or trainer state this run needs;
- a run whose flags differ from the checkpoint's in anything that changes the trajectory
  (`RECORDED_FLAGS`), the template and the content of the LLM, the tower, the pre-trained projector
  and the data file included (fingerprints, so moved files still resume): a resumed run either
  continues the interrupted one exactly or does not start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from llava.cli_errors import UserError
from llava.model.checkpoint_parts import MM_PROJECTOR, NON_LORA_TRAINABLES
from llava.model.weights import SAFETENSORS_SINGLE

logger = logging.getLogger(__name__)

MANIFEST = "checkpoint_manifest.json"
MANIFEST_FORMAT = 1
TEMP_PREFIX = ".tmp-"
REPLACED_PREFIX = ".replaced-"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
DEEPSPEED_TAG_FILE = "latest"
SUMMARY_FILE = "training_summary.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's name for the LoRA weights
# A finished run's files in `--output_dir` (the summary is written last).
FINISHED_RUN_FILES = (
    SUMMARY_FILE,
    ADAPTER_WEIGHTS,
    NON_LORA_TRAINABLES,
    MM_PROJECTOR,
    SAFETENSORS_SINGLE,
    TRAINER_STATE,
)
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")

# The flags recorded in every checkpoint and compared on resume. Each changes what a step computes
# (rate, schedule, batch, data order, model, recipe), so a resumed run with another value would not
# continue the interrupted one: it is refused. Most keys are flag names; the others are quantities
# derived from several flags, described as such in a refusal (`DERIVED_FLAGS`), and content
# fingerprints of the locations some flags name (`CONTENT_FLAGS`).
# Recorded flag -> the model config field holding its value (defaults included).
CONFIG_FLAGS = {
    "fusion_variant": "fusion_variant",
    "fusion_targets": "fusion_targets",
    "layer_ids_to_inject": "fusion_layer_ids",
    "fusion_alpha": "fusion_alpha",
    "fusion_hidden_dim": "fusion_hidden_dim",
    "fusion_dropout": "fusion_dropout",
    "vision_stream_norm": "vision_stream_norm",
    "mm_projector_type": "mm_projector_type",
    "mm_vision_select_layer": "mm_vision_select_layer",
    "image_aspect_ratio": "image_aspect_ratio",
}
TRAINING_FLAGS = (
    "lora_enable",
    "learning_rate",
    "fusion_lr",
    "mm_projector_lr",
    "loraplus_lr_ratio",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "group_by_modality_length",
    "seed",
    "data_seed",
    "model_max_length",
    "bf16",
    "padding_free",
    "fp16",
)
# Flags naming a model or a data file: recorded as `<flag>_fingerprint`, the content fingerprint
# of what the location holds (`llava.model.fingerprint.location_fingerprint`), so moving or renaming
# the files keeps a resume valid and other content under the same name is refused.
CONTENT_FLAGS = ("model_name_or_path", "vision_tower", "pretrain_mm_mlp_adapter", "data_path")
# Recorded quantities that are not flags -> what they are, for the refusal message.
DERIVED_FLAGS = {
    "world_size": "the number of processes",
    "num_samples": "the number of usable samples the data set yields",
    "trained_groups": "the trained parameter groups (tensors per group; set by the model and recipe flags)",
    "deepspeed": "whether DeepSpeed is used (--deepspeed given)",
}


def fingerprint_key(flag: str) -> str:
    """The recorded key of a `CONTENT_FLAGS` flag's fingerprint."""
    return f"{flag}_fingerprint"


RECORDED_FLAGS = tuple(
    dict.fromkeys(
        (
            "model_type",
            "version",
            *(fingerprint_key(flag) for flag in CONTENT_FLAGS),
            *CONFIG_FLAGS,
            "lora_r",
            "lora_alpha",
            "lora_dropout",
            "lora_layer_ids_to_skip",
            "trained_groups",
            "optim",
            "train_sampling_strategy",
            "num_samples",
            "deepspeed",
            *TRAINING_FLAGS,
        )
    )
)
# Where the run read its `CONTENT_FLAGS` locations: recorded beside the flags for the messages,
# never compared (a moved file keeps its fingerprint).
LOCATIONS = "locations"


class IncompleteCheckpointError(UserError, FileNotFoundError):
    """A checkpoint folder lacks a file, or a file is not the size its manifest records."""


class ResumeMismatchError(UserError, ValueError):
    """The resumed run's flags differ from those recorded in the checkpoint."""


class UsedOutputDirError(UserError, FileExistsError):
    """`--output_dir` holds another run's checkpoints or model and the user neither resumes nor overwrites."""


def checkpoint_step(name: str) -> int | None:
    """N for a folder named `checkpoint-N`, else None."""
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None


def temp_folder(final: str | os.PathLike) -> Path:
    """Where `final` (`.../checkpoint-N`) is written before it is renamed into place."""
    final = Path(final)
    return final.with_name(TEMP_PREFIX + final.name)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sizes(folder: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file under `folder` (the manifest excluded)."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def write_json_atomically(path: str | os.PathLike, content: dict) -> None:
    """Write `content` to `path` through a temporary file, flushed and renamed: a reader sees the
    old file or the whole new one, never a part."""
    path = Path(path)
    partial = path.with_name(TEMP_PREFIX + path.name)
    with open(partial, "w") as f:
        json.dump(content, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def publish_checkpoint(temp: Path, final: Path, flags: dict, global_step: int) -> None:
    """Flush every file of `temp`, write its manifest last, then rename `temp` to `final`.

    An existing `final` (left by a trajectory that was abandoned by resuming from an earlier
    checkpoint) is moved aside first and deleted after the rename, so `final` is at every moment
    either absent, the old complete checkpoint, or the new complete one.
    """
    sizes = _file_sizes(temp)
    for relative in sizes:
        _fsync(temp / relative)
    manifest = {"format": MANIFEST_FORMAT, "global_step": global_step, "flags": flags, "files": sizes}
    write_json_atomically(temp / MANIFEST, manifest)
    _fsync(temp)
    replaced = final.with_name(REPLACED_PREFIX + final.name)
    if final.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        os.rename(final, replaced)
    os.rename(temp, final)
    _fsync(final.parent)
    if replaced.exists():
        shutil.rmtree(replaced)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a complete checkpoint (`IncompleteCheckpointError` otherwise)."""
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise IncompleteCheckpointError(f"checkpoint {folder} is incomplete: {problem}")
    with open(Path(folder) / MANIFEST) as f:
        return json.load(f)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """None when `folder` is a complete checkpoint: its manifest is readable and every file it
    lists is there with the recorded size. Otherwise what is wrong, naming the file."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return (
            f"{manifest_path} is missing (it is written last, so the save did not finish, or the folder "
            "was not written by llava.train)"
        )
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return f"{manifest_path} is unreadable ({err})"
    for relative, size in files.items():
        path = folder / relative
        if not path.is_file():
            return f"{path} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{path} has {actual} bytes, the manifest records {size} (truncated or replaced)"
    return None


def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, highest N first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = sorted(
        (step, path)
        for path in output_dir.iterdir()
        if path.is_dir() and (step := checkpoint_step(path.name)) is not None
    )
    return [path for _, path in reversed(found)]


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> Path:
    """The complete `checkpoint-N` of `output_dir` with the highest N; every newer incomplete one
    is skipped with a warning naming it and what it lacks."""
    skipped = []
    for folder in checkpoints_newest_first(output_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
        skipped.append(folder.name)
    detail = f" (incomplete: {', '.join(skipped)})" if skipped else ""
    raise FileNotFoundError(f"no complete {PREFIX_CHECKPOINT_DIR}-N in {output_dir}{detail}")


def resume_requested(value: str | bool | None) -> bool:
    """Whether `--resume_from_checkpoint` asks to resume."""
    if value is None or value is False:
        return False
    return str(value).lower() not in ("", "false", "none")


def finished_run(output_dir: str | os.PathLike, max_steps: int, num_train_epochs: float) -> dict | None:
    """The summary of the run finished in `output_dir` under this step budget (`max_steps`, or
    `num_train_epochs` when `max_steps` <= 0), or None when `output_dir` holds no finished run or
    one finished under another budget. A resume of a finished run has nothing left to train: its
    schedule ended at its last step, and one more step would run past it."""
    summary_path, state_path = Path(output_dir) / SUMMARY_FILE, Path(output_dir) / TRAINER_STATE
    if not (summary_path.is_file() and state_path.is_file()):
        return None
    try:
        summary, state = json.loads(summary_path.read_text()), json.loads(state_path.read_text())
        done = state["global_step"] >= state["max_steps"] > 0
        budget = (
            (state["max_steps"] == max_steps)
            if max_steps > 0
            else state["num_train_epochs"] == num_train_epochs
        )
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{output_dir}: its finished-run files {SUMMARY_FILE} / {TRAINER_STATE} are damaged ({err!r}); "
            "resume from a checkpoint by path, or start over with --overwrite_output_dir True"
        ) from err
    return summary if done and budget else None


def resolve_resume(value: str | bool | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint PATH` (which must be complete), or `latest`/`True` for the newest
    complete checkpoint of `output_dir`; None when not resuming."""
    if not resume_requested(value):
        return None
    if str(value).lower() in ("latest", "true"):
        return str(newest_complete_checkpoint(output_dir))
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: not a folder")
    problem = checkpoint_problem(value)
    if problem is not None:
        raise IncompleteCheckpointError(f"--resume_from_checkpoint {value}: incomplete checkpoint: {problem}")
    return str(value)


def check_training_state_files(
    folder: str | os.PathLike, world_size: int, deepspeed: bool, fp16: bool = False
) -> None:
    """The optimizer, scheduler, RNG and trainer state a resumed run loads are all in `folder`, and
    the gradient scaler's (`scaler.pt`) for an fp16 run without DeepSpeed (DeepSpeed keeps its own
    loss scale in its optimizer state)."""
    folder = Path(folder)
    needed = {TRAINER_STATE: "the trainer state (step, epoch, logs)", SCHEDULER: "the learning-rate schedule"}
    if world_size > 1:
        needed.update({f"rng_state_{rank}.pth": f"rank {rank}'s RNG state" for rank in range(world_size)})
    else:
        needed["rng_state.pth"] = "the RNG state (dropout, data order)"
    if deepspeed:
        needed[DEEPSPEED_TAG_FILE] = "DeepSpeed's tag of its optimizer and model states"
    else:
        needed[OPTIMIZER] = "the optimizer state (Adam's moments)"
        if fp16:
            needed[SCALER] = "the fp16 gradient scaler's state (its loss scale)"
    for name, what in needed.items():
        if not (folder / name).is_file():
            raise IncompleteCheckpointError(
                f"cannot resume from {folder}: {folder / name} ({what}) is missing; without it the run "
                "would not continue the interrupted one"
            )
    if deepspeed:
        tag = (folder / DEEPSPEED_TAG_FILE).read_text().strip()
        if not (folder / tag).is_dir():
            raise IncompleteCheckpointError(
                f"cannot resume from {folder}: {folder / DEEPSPEED_TAG_FILE} names {tag!r}, which is missing"
            )


_FINGERPRINTED = {fingerprint_key(flag): flag for flag in CONTENT_FLAGS}


def _describe_difference(name: str, saved: dict, current: dict) -> str:
    """One differing recorded quantity, in the user's terms: the flag and both values, or what a
    derived quantity is and which flags set it."""
    old, new = saved.get(name), current.get(name)
    if name not in saved:
        return f"{name} is not recorded in the checkpoint (written by an earlier version of llava.train)"
    if name in _FINGERPRINTED:
        flag = _FINGERPRINTED[name]
        where = (saved.get(LOCATIONS) or {}).get(flag), (current.get(LOCATIONS) or {}).get(flag)
        if old is None or new is None:
            given = "given" if new is not None else "not given"
            return f"--{flag} is {given} now; the checkpoint's run had {where[0]!r}"
        return (
            f"the content of --{flag} changed (the checkpoint's run read {where[0]}, fingerprint {old}; "
            f"this run reads {where[1]}, fingerprint {new})"
        )
    if name == "num_samples":
        return (
            f"the data set now yields {new} usable samples, the checkpoint's run had {old}: check "
            "--data_path / --image_folder and the skipped-sample report"
        )
    if name in DERIVED_FLAGS:
        return f"{DERIVED_FLAGS[name]}: {old!r} in the checkpoint's run, {new!r} now"
    return f"--{name}: {old!r} in the checkpoint, {new!r} now"


def compare_flags(saved: dict, current: dict, folder: str | os.PathLike) -> None:
    """Refuse to resume when a recorded flag or quantity differs, naming each (see
    `_describe_difference`)."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as recorded
    differences = [
        _describe_difference(name, saved, current)
        for name in RECORDED_FLAGS
        if name not in saved or saved[name] != current.get(name)
    ]
    if differences:
        raise ResumeMismatchError(
            f"cannot resume from {folder}: the run differs from the checkpoint's: "
            + "; ".join(differences)
            + ". A resumed run continues the interrupted one exactly: give the checkpoint's values, or "
            "start a new run in another --output_dir"
        )


def used_output_dir_contents(output_dir: str | os.PathLike) -> list[str]:
    """The names in `output_dir` that show an earlier run: `checkpoint-N` folders and a finished
    model's files."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in output_dir.iterdir()
        if (p.is_dir() and checkpoint_step(p.name) is not None) or p.name in FINISHED_RUN_FILES
    )


def guard_output_dir(output_dir: str, resuming: bool, overwrite: bool) -> list[str]:
    """Refuse a used `output_dir` unless the run resumes or overwrites; return what an overwrite
    must remove (empty otherwise)."""
    used = used_output_dir_contents(output_dir)
    if not used or resuming:
        return []
    if not overwrite:
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise UsedOutputDirError(
            f"--output_dir {output_dir} already holds a run ({shown}). Resume it with "
            "--resume_from_checkpoint latest, or replace it with --overwrite_output_dir True"
        )
    return used


def clear_output_dir(output_dir: str, used: list[str]) -> None:
    """Remove an earlier run's checkpoints and finished-model files (`--overwrite_output_dir`), and
    stale temporary checkpoint folders, so no checkpoint of it can be resumed into the new run."""
    root = Path(output_dir)
    stale = [p.name for p in root.iterdir() if p.name.startswith((TEMP_PREFIX, REPLACED_PREFIX))]
    for name in [*used, *stale]:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    logger.warning("--overwrite_output_dir: removed %s from %s", ", ".join(used + stale), output_dir)
