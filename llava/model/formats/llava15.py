"""LLaVA-1.5's own checkpoints (https://github.com/haotian-liu/LLaVA): a flat Llama config.json
with `"model_type": "llava"` (or LLaVA-NeXT's `"llava_llama"`) and LLaVA's `mm_*` fields, no
`vision_config`, beside one of

- a merged model: `pytorch_model.bin` or `pytorch_model-0000K-of-0000N.bin` +
  `pytorch_model.bin.index.json` (or safetensors);
- a LoRA run: `adapter_config.json` + `adapter_model.*` + `non_lora_trainables.bin`;
- a stage-1 run: `mm_projector.bin`.

The config is translated by `llava.model.llava_formats`; the tower comes from
`mm_vision_tower` as in LLaVA's loader (the checkpoint's stored tower only when it was trained,
`unfreeze_mm_vision_tower`), and so does the image processor. LLaVA adds LoRA before the tower
and projector exist, so an adapter's `target_modules` never reach them.
"""

from __future__ import annotations

from pathlib import Path

from llava.model.checkpoint_parts import llava_vision_tower, load_tower_from
from llava.model.formats.base import CONFIG_FILE, CheckpointFormat, Loaded, LoadOptions, config_dict
from llava.model.formats.kinds import Plan, find_kind, load_planned
from llava.model.llava_formats import LLAVA_NON_LORA_TRAINABLES, is_llava_config, translate_llava_config
from llava.model.llava_llama import LlavaLlamaForCausalLM

NAME = "llava-1.5"


def detect(folder: Path) -> bool:
    """LLaVA's flat config.json (no `text_config`, no `vision_config`)."""
    raw = config_dict(folder)
    return raw is not None and is_llava_config(raw)


def plan(folder: Path) -> Plan:
    """The translated config and the kind of folder; the tower from `mm_vision_tower`."""
    llava = translate_llava_config(config_dict(folder), folder / CONFIG_FILE)
    kind, trainables = find_kind(folder, llava.config, LLAVA_NON_LORA_TRAINABLES)

    def tower_in_checkpoint(model, checkpoint: Path, report) -> None:
        llava_vision_tower(model, checkpoint, llava, report)

    def tower_on_base(model, _base: Path, report) -> None:
        load_tower_from(model, llava.tower_location, report)

    return Plan(
        kind,
        llava.config,
        LlavaLlamaForCausalLM,
        trainables,
        tower_in_checkpoint=tower_in_checkpoint,
        tower_on_base=tower_on_base,
        lora_before_tower=True,
        image_processor=llava.tower_location,
    )


def load(folder: Path, model_base: str | None, options: LoadOptions) -> Loaded:
    return load_planned(folder, model_base, plan(folder), options)


FORMAT = CheckpointFormat(
    name=NAME,
    looks_for=(
        'flat config.json with "model_type" "llava" or "llava_llama" and no vision_config / text_config; '
        "beside it pytorch_model*.bin (+ index) or model*.safetensors, or adapter_config.json + "
        "non_lora_trainables.bin, or mm_projector.bin"
    ),
    detect=detect,
    load=load,
)
