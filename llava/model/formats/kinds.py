"""The three kinds of folder that this project's, LLaVA-1.5's and the release's formats share, and
how each loads once its format has said what it holds (`Plan`):

- complete (or merged): the model's weights, read with `from_pretrained`;
- LoRA run: `adapter_config.json` + adapter + the trained non-LoRA tensors, on top of `model_base`;
- stage-1 projector: `mm_projector.*` and a multimodal config, on top of `model_base`.

A format decides the config, the model class, where the vision tower comes from and what else
it attaches (`Plan`); the steps here are the same for all three: the `--model-base` rules, the
load with its shape check, the parts on top, the check that no parameter is left untrained, and
the LoRA merge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForCausalLM

from llava.model.checkpoint_parts import (
    MM_PROJECTOR,
    load_partial_state,
    merge_lora,
    one_of,
    require_complete,
    require_non_lora_trainables,
)
from llava.model.configuration import is_multimodal_config
from llava.model.formats.base import Loaded, LoadOptions, ModelBaseError, load_tokenizer, local_folder
from llava.model.llava_formats import LLAVA_MM_PROJECTOR
from llava.model.load_report import LoadReport, from_pretrained_checked
from llava.model.vision_tower import load_image_processor
from llava.model.weights import check_folder_pickles, model_weight_files

ADAPTER_CONFIG = "adapter_config.json"
# Modules LoRA cannot have targeted in formats that add it before the tower and projector exist.
_TOWER_AND_PROJECTOR = r".*\.(vision_tower|mm_projector)\..*"

# (model, folder holding the weights, report): puts the vision tower's weights into `model`.
TowerLoader = Callable[[object, Path, LoadReport], None]


@dataclass
class Plan:
    """What a format found in a folder and how it loads."""

    kind: str  # "complete", "lora" or "projector"
    config: object
    model_cls: type
    trainables: Path | None = None  # non_lora_trainables.* or mm_projector.*, loaded on top
    tower_in_checkpoint: TowerLoader | None = None  # complete: given the checkpoint's folder
    tower_on_base: TowerLoader | None = None  # LoRA / projector: given the base's folder
    extra_parts: Callable[[object, LoadReport], None] | None = None  # loaded after the tower
    lora_before_tower: bool = False  # LoRA was added before the tower and projector existed
    image_processor: str | None = None  # where it comes from; None for a text-only LLM


def find_kind(folder: Path, config, trainables_name: str) -> tuple[str, Path | None]:
    """`(kind, file loaded on top)` of a folder, from its files: a LoRA run (its non-LoRA
    trainables, `trainables_name` in the error when a multimodal run lacks them), a complete
    model, or a stage-1 projector (with a multimodal config)."""
    if (folder / ADAPTER_CONFIG).exists():
        return "lora", require_non_lora_trainables(folder, config, trainables_name)
    if model_weight_files(folder):
        return "complete", None
    projector = one_of(folder, (MM_PROJECTOR, LLAVA_MM_PROJECTOR))
    if projector is not None and is_multimodal_config(config):
        return "projector", projector
    raise FileNotFoundError(
        f"{folder}: no weights found (expected model*.safetensors or pytorch_model*.bin, an "
        "adapter_config.json with its adapter, or a multimodal config with mm_projector.safetensors / "
        "mm_projector.bin)"
    )


def processor_source(folder: Path, config) -> str | None:
    """This project's folders may carry their own image processor, else the tower's; None when
    the model has no tower."""
    if not is_multimodal_config(config):
        return None
    return str(folder) if (folder / "preprocessor_config.json").exists() else config.mm_vision_tower


def _load_complete(folder: Path, plan: Plan, load_kwargs: dict):
    check_folder_pickles(folder)
    config_kwargs = {} if plan.model_cls is AutoModelForCausalLM else {"config": plan.config}
    model, report = from_pretrained_checked(plan.model_cls, folder, **config_kwargs, **load_kwargs)
    if plan.tower_in_checkpoint is not None:
        plan.tower_in_checkpoint(model, folder, report)
    return model, report


def _load_on_base(folder: Path, base: Path, plan: Plan, load_kwargs: dict):
    """A LoRA or projector folder on top of its base LLM (or base multimodal model)."""
    check_folder_pickles(base)
    model, report = from_pretrained_checked(plan.model_cls, base, config=plan.config, **load_kwargs)
    if plan.tower_on_base is not None:
        plan.tower_on_base(model, base, report)
    if plan.extra_parts is not None:
        plan.extra_parts(model, report)
    if plan.trainables is not None:
        report.record(plan.trainables, load_partial_state(model, plan.trainables))
    require_complete(report, str(folder))
    if plan.kind == "lora":
        model = merge_lora(model, folder, _TOWER_AND_PROJECTOR if plan.lora_before_tower else None)
    return model, report


def load_planned(folder: Path, model_base: str | None, plan: Plan, options: LoadOptions) -> Loaded:
    """Load `folder` as `plan` says, on top of `model_base` when it holds trained parts only.

    Raises:
        ModelBaseError: `model_base` given for a complete checkpoint, or missing for trained parts.
    """
    load_kwargs = {
        "dtype": options.dtype,
        "attn_implementation": options.attn_implementation,
        "quantization_config": options.quantization,
    }
    base = None
    if plan.kind == "complete":
        if model_base is not None:
            raise ModelBaseError(
                f"{options.label} is a complete checkpoint; --model-base applies only to LoRA/projector runs"
            )
        model, report = _load_complete(folder, plan, load_kwargs)
        require_complete(report, options.label)
    else:
        marker = folder / ADAPTER_CONFIG if plan.kind == "lora" else plan.trainables
        if model_base is None:
            raise ModelBaseError(
                f"{marker}: {options.label} holds only trained parts (a LoRA run or a stage-1 projector); "
                "pass the LLM they were trained on as model_base (--model-base)"
            )
        base = local_folder(model_base, "model base")
        model, report = _load_on_base(folder, base, plan, load_kwargs)
    image_processor = load_image_processor(plan.image_processor) if plan.image_processor else None
    return Loaded(
        model,
        load_tokenizer(folder, base),
        image_processor,
        summary=report.describe(),
        placed=options.quantization is not None,  # bitsandbytes places quantized weights itself
    )
