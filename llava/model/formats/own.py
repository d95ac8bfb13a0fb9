"""This project's own checkpoints: what `save_pretrained` and the training recipe write.

A config.json of one of this project's models (`fusion_llama`, `llava_llama`, `fusion_qwen2`,
...: a `model_type` of `llava.model.registry.MODEL_CLASSES`, with a `vision_config`), or of a
text-only LLM that transformers knows (`llama`, `qwen2`, ...); then, by the files beside it, a
complete model (`model*.safetensors`), a LoRA run (`adapter_config.json` +
`non_lora_trainables.safetensors`) or a stage-1 projector (`mm_projector.safetensors`). The
vision tower comes from the checkpoint when it holds all of the tower's weights, else from
`mm_vision_tower`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

from llava.model.checkpoint_parts import NON_LORA_TRAINABLES, ensure_vision_tower
from llava.model.configuration import is_multimodal_config
from llava.model.formats.base import CheckpointFormat, Loaded, LoadOptions, config_dict
from llava.model.formats.kinds import Plan, find_kind, load_planned, processor_source
from llava.model.registry import MODEL_CLASSES

NAME = "own"
# transformers' name for its llava format, and LLaVA-1.5's for its own: never this project's.
_FOREIGN_MODEL_TYPE = "llava"


def detect(folder: Path) -> bool:
    """A config.json of this project's multimodal models (with its `vision_config`), or of a
    text-only LLM transformers knows."""
    raw = config_dict(folder)
    if raw is None:
        return False
    model_type = raw.get("model_type")
    if model_type in MODEL_CLASSES:
        return "vision_config" in raw
    return isinstance(model_type, str) and model_type != _FOREIGN_MODEL_TYPE and model_type in CONFIG_MAPPING


def plan(folder: Path) -> Plan:
    """The config (through `AutoConfig`), the model class and the kind of folder."""
    config = AutoConfig.from_pretrained(folder)
    model_cls = MODEL_CLASSES[config.model_type][1] if config.model_type in MODEL_CLASSES else None
    kind, trainables = find_kind(folder, config, NON_LORA_TRAINABLES)
    tower = ensure_vision_tower if is_multimodal_config(config) else None
    return Plan(
        kind,
        config,
        model_cls or AutoModelForCausalLM,
        trainables,
        tower_in_checkpoint=tower,
        tower_on_base=tower,
        image_processor=processor_source(folder, config),
    )


def load(folder: Path, model_base: str | None, options: LoadOptions) -> Loaded:
    return load_planned(folder, model_base, plan(folder), options)


FORMAT = CheckpointFormat(
    name=NAME,
    looks_for=(
        "config.json with this project's model_type (fusion_*, llava_*) and a vision_config, or a "
        "text-only LLM's; beside it model*.safetensors / pytorch_model*.bin, or adapter_config.json + "
        "non_lora_trainables.safetensors, or mm_projector.safetensors"
    ),
    detect=detect,
    load=load,
)
