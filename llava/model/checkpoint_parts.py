"""The parts of a checkpoint loaded on top of a base model: partial state dicts (trained non-LoRA
weights, a projector), the vision tower, the LoRA adapter; and the checks that nothing is left
untrained or half-loaded. Every tensor copied is shape-checked."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from llava.model.configuration import is_multimodal_config
from llava.model.llava_formats import LLAVA_NON_LORA_TRAINABLES, LlavaCheckpointConfig, strip_peft_prefixes
from llava.model.load_report import LoadReport
from llava.model.weights import checkpoint_keys, copy_checked, load_weights

logger = logging.getLogger(__name__)

NON_LORA_TRAINABLES = "non_lora_trainables.safetensors"
MM_PROJECTOR = "mm_projector.safetensors"
TOWER_PREFIX = "model.vision_tower."


def load_partial_state(model: torch.nn.Module, path: Path) -> list[str]:
    """Load a partial state dict (trained non-LoRA weights, a projector; safetensors or a
    weights-only pickle, PEFT's key prefixes removed as LLaVA does), insisting every key lands
    with its shape; returns the names loaded."""
    state = strip_peft_prefixes(load_weights(path))
    params = dict(model.named_parameters())
    unknown = sorted(k for k in state if k not in params)
    if unknown:
        raise KeyError(f"{path}: {len(unknown)} key(s) match no parameter of the model, e.g. {unknown[:3]}")
    for key, value in state.items():
        copy_checked(params[key], value, key, path)
    logger.info("loaded %d tensors from %s", len(state), path)
    return list(state)


def tower_parameter_names(model) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.startswith(TOWER_PREFIX)]


def load_tower_from(model, location: str, report: LoadReport) -> None:
    model.get_vision_tower().load_pretrained_weights(location)
    report.record(location, tower_parameter_names(model))


def _require_tower_in(model, checkpoint: Path, present: set[str]) -> None:
    """All of the tower's weights are among `present` (a checkpoint holding part of it is an error)."""
    wanted = set(tower_parameter_names(model))
    absent = sorted(wanted - present)
    if absent:
        raise KeyError(
            f"{checkpoint} holds {len(present & wanted)} of the vision tower's {len(wanted)} weights; "
            f"missing e.g. {absent[:3]}"
        )


def ensure_vision_tower(model, checkpoint: Path, report: LoadReport) -> None:
    """This project's checkpoints: the tower from `checkpoint` when it carries its weights (all
    of them), else from `config.mm_vision_tower`."""
    present = {k for k in checkpoint_keys(checkpoint) if k.startswith(TOWER_PREFIX)}
    if present:
        _require_tower_in(model, checkpoint, present)
        return
    tower = model.config.mm_vision_tower
    if not tower:
        raise ValueError(
            f"{checkpoint} holds no vision tower weights and its config names no mm_vision_tower"
        )
    load_tower_from(model, tower, report)


def llava_vision_tower(model, checkpoint: Path, llava: LlavaCheckpointConfig, report: LoadReport) -> None:
    """LLaVA's checkpoints, as its loader does: the tower from `mm_vision_tower`, the stored tower
    tensors ignored, unless the tower was trained (`unfreeze_mm_vision_tower`): then all of its
    weights must be the checkpoint's."""
    present = {k for k in checkpoint_keys(checkpoint) if k.startswith(TOWER_PREFIX)}
    if llava.tower_in_checkpoint:
        _require_tower_in(model, checkpoint, present)
        return
    if present:
        logger.info(
            "%s: %d stored vision tower tensors ignored; the tower comes from mm_vision_tower %s, as in LLaVA",
            checkpoint,
            len(present),
            llava.tower_location,
        )
    load_tower_from(model, llava.tower_location, report)


def one_of(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The one file of `names` that `folder` holds (None if none; two is an error naming both)."""
    found = [folder / name for name in names if (folder / name).exists()]
    if len(found) > 1:
        raise ValueError(
            f"{folder} holds both {found[0].name} and {found[1].name}; keep the one that belongs"
        )
    return found[0] if found else None


def require_non_lora_trainables(path: Path, config, expected: str) -> Path | None:
    """A LoRA run of a multimodal model keeps its trained fusion branch / projector (everything
    trained that is not LoRA) in `expected`; without it they would be merged untrained."""
    found = one_of(path, (NON_LORA_TRAINABLES, LLAVA_NON_LORA_TRAINABLES))
    if found is not None or not is_multimodal_config(config):
        return found
    trained = "fusion branch" if config.method == "fusion" else "projector"
    raise FileNotFoundError(
        f"{path / expected} is missing: this LoRA folder of a {config.model_type} model would "
        f"load with an untrained {trained} (the training run writes the file next to "
        "adapter_config.json; copy it back)"
    )


def require_complete(report: LoadReport, model_path: str) -> None:
    """Refuse a model some of whose parameters no file provided."""
    if report.missing:
        raise KeyError(
            f"{model_path}: {len(report.missing)} parameter(s) would stay newly initialised, as no file of "
            f"the checkpoint (nor the base) holds them, e.g. {report.missing[:3]}"
        )


def merge_lora(model, folder: Path, exclude_modules: str | None):
    """`model` with the LoRA adapter of `folder` (`adapter_model.safetensors` or a weights-only
    `adapter_model.bin`) merged in. Every adapter tensor must land in a LoRA layer, and every
    LoRA layer must get its tensors. `exclude_modules`: modules the adapter's `target_modules`
    names cannot have meant (LLaVA adds LoRA before its tower and projector exist)."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

    adapter_file = one_of(folder, ("adapter_model.safetensors", "adapter_model.bin"))
    if adapter_file is None:
        raise FileNotFoundError(f"{folder / 'adapter_model.safetensors'} (or adapter_model.bin) is missing")
    peft_config = PeftConfig.from_pretrained(folder)
    peft_config.inference_mode = True
    if exclude_modules is not None and getattr(peft_config, "exclude_modules", None) is None:
        peft_config.exclude_modules = exclude_modules
    peft_model = get_peft_model(model, peft_config)
    result = set_peft_model_state_dict(peft_model, load_weights(adapter_file))
    unexpected = sorted(result.unexpected_keys)
    if unexpected:
        raise KeyError(
            f"{adapter_file}: {len(unexpected)} tensor(s) match no LoRA layer, e.g. {unexpected[:3]}"
        )
    untrained = sorted(k for k in result.missing_keys if "lora_" in k)
    if untrained:
        raise KeyError(
            f"{adapter_file}: holds no tensors for {len(untrained)} LoRA weight(s), e.g. {untrained[:3]}"
        )
    logger.info("merging the LoRA adapter %s", adapter_file)
    return peft_model.merge_and_unload()
