"""The authors' first public release (2025, https://github.com/xuhuizhan5/Inverse-LLaVA): its LoRA
output folders, read into the matching release variant (`release_mlp` / `release_stable`).

A flat config.json with `"model_type": "fusion_llama"` and the release's own fields
(`layer_ids_to_inject`, `use_vision_fusion`, `stable_fusion`), beside `adapter_config.json`,
the adapter and `non_lora_trainables.bin` (+ `non_lora_trainables_skip_layer.bin`). What the
files hold and how they are checked: `llava.model.release_checkpoint`. Only LoRA folders exist,
so a load always needs `model_base`; the tower comes from `mm_vision_tower`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llava.model.checkpoint_parts import load_tower_from
from llava.model.formats.base import CONFIG_FILE, CheckpointFormat, Loaded, LoadOptions, config_dict
from llava.model.formats.kinds import ADAPTER_CONFIG, Plan, load_planned, processor_source
from llava.model.fusion_llama import FusionLlamaForCausalLM
from llava.model.load_report import LoadReport
from llava.model.paths import resolve_location
from llava.model.release_checkpoint import (
    RELEASE_FUSION_FILE,
    ReleaseFusionTensors,
    check_base_copies,
    is_release_config,
    read_release_fusion,
    translate_release_config,
)
from llava.model.weights import copy_checked, load_pickled_weights

logger = logging.getLogger(__name__)

NAME = "first-release"


def detect(folder: Path) -> bool:
    """A config.json with the release's own fields."""
    raw = config_dict(folder)
    return raw is not None and is_release_config(raw)


def _load_release_fusion(model, folder: Path, release: ReleaseFusionTensors, report: LoadReport) -> None:
    check_base_copies(model, release.base_copies, folder)
    params = dict(model.named_parameters())
    source = folder / RELEASE_FUSION_FILE
    for key, value in release.fusion.items():
        copy_checked(params[key], value, key, source)
    report.record(source, list(release.fusion))


def plan(folder: Path) -> Plan:
    """The release's LoRA output folder: the variant, layers and targets from its tensors."""
    if not (folder / ADAPTER_CONFIG).exists():
        raise FileNotFoundError(
            f"{folder}: a config of the paper's release without {ADAPTER_CONFIG}; only its LoRA output "
            "folders (adapter + non_lora_trainables.bin) can be loaded"
        )
    tensors = read_release_fusion(folder, load_pickled_weights)
    config = translate_release_config(config_dict(folder), tensors, folder / CONFIG_FILE)
    logger.info(
        "%s: the release's %s layer in layers %s (decided from %s's tensor names)",
        folder,
        tensors.variant,
        tensors.layer_ids,
        RELEASE_FUSION_FILE,
    )

    def tower_on_base(model, _base: Path, report: LoadReport) -> None:
        load_tower_from(model, resolve_location(config.mm_vision_tower, "vision tower"), report)

    def fusion(model, report: LoadReport) -> None:
        _load_release_fusion(model, folder, tensors, report)

    return Plan(
        "lora",
        config,
        FusionLlamaForCausalLM,
        tower_on_base=tower_on_base,
        extra_parts=fusion,
        lora_before_tower=True,
        image_processor=processor_source(folder, config),
    )


def load(folder: Path, model_base: str | None, options: LoadOptions) -> Loaded:
    return load_planned(folder, model_base, plan(folder), options)


FORMAT = CheckpointFormat(
    name=NAME,
    looks_for=(
        'flat config.json with "model_type" "fusion_llama" and layer_ids_to_inject / use_vision_fusion / '
        "stable_fusion; beside it adapter_config.json + non_lora_trainables.bin"
    ),
    detect=detect,
    load=load,
)
