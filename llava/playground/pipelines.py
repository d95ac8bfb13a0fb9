"""The playground's pipelines, declared with typed fields, and the training flags they become.

A `Pipeline` says which model it trains (`fusion_llama`: Inverse-LLaVA, or `llava_llama`:
LLaVA-1.5 with its projector), whether LLaVA-1.5's alignment stage comes first, and the fusion
layers, variant and tower layers. With a preset's `Budget` it yields its `TrainStage`s (steps,
rates, schedule), and `train_argv` turns a stage into the `llava.train.train` flags a 7B user
passes, with a tiny budget.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from llava.playground.datasets import PlaygroundData
from llava.playground.presets import Budget, Preset
from llava.playground.tokenizer import CONV_TEMPLATE

ModelType = Literal["fusion_llama", "llava_llama"]
FUSION_DROPOUT = 0.1
PROJECTOR_TYPE = "mlp2x_gelu"


@dataclasses.dataclass(frozen=True)
class TrainStage:
    """One `llava.train.train` run of a pipeline."""

    name: str
    align: bool  # LLaVA-1.5's stage 1: captions, template `plain`, projector only, cosine
    steps: int
    learning_rate: float
    projector_lr: float | None  # the projector's own rate in instruction tuning (None: no projector)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    name: str
    label: str
    model_type: ModelType
    align: bool = False  # LLaVA-1.5's alignment stage before instruction tuning
    fusion_layers: tuple[int, ...] = (0,)  # fusion_llama: layers that take vision (no LoRA there)
    fusion_variant: str | None = None  # fusion_llama: None keeps the model's default
    vision_layers: tuple[int, ...] = (-1,)  # tower layers read (`--mm_vision_select_layer`)

    def __post_init__(self) -> None:
        if self.model_type not in ("fusion_llama", "llava_llama"):
            raise ValueError(f"Pipeline {self.name}: unknown model_type {self.model_type!r}")
        if self.align and not self.projector:
            raise ValueError(
                f"Pipeline {self.name}: only a projector model (llava_llama) has an alignment stage"
            )
        if self.fusion_variant is not None and self.projector:
            raise ValueError(f"Pipeline {self.name}: fusion_variant is a fusion_llama setting")

    @property
    def projector(self) -> bool:
        """Whether vision enters through LLaVA-1.5's projector (else through fusion layers)."""
        return self.model_type == "llava_llama"

    @property
    def stages(self) -> tuple[str, ...]:
        return ("align", "finetune") if self.align else ("finetune",)

    def train_stages(self, budget: Budget) -> tuple[TrainStage, ...]:
        """The pipeline's stages under `budget`: the same instruction stage for every pipeline."""
        finetune = TrainStage(
            "finetune",
            False,
            budget.steps,
            budget.learning_rate,
            budget.projector_lr if self.projector else None,
        )
        if not self.align:
            return (finetune,)
        return TrainStage("align", True, budget.align_steps, budget.alignment_rate, None), finetune


def _fusion(name: str, label: str, **fields: Any) -> Pipeline:
    return Pipeline(name, label, "fusion_llama", **fields)


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        _fusion("inverse_llava", "Inverse-LLaVA"),
        Pipeline("llava_1_5", "LLaVA-1.5", "llava_llama", align=True, vision_layers=(-2,)),
        Pipeline("llava_no_align", "LLaVA-1.5 w/o alignment", "llava_llama", vision_layers=(-2,)),
        _fusion("inverse_llava_hd", "Inverse-LLaVA-HD", vision_layers=(-1, -2)),
        _fusion("ablation_add", "Inverse-LLaVA (add)", fusion_variant="add"),
        _fusion("ablation_gated", "Inverse-LLaVA (gated)", fusion_variant="gated"),
        _fusion("ablation_multi_layer", "Inverse-LLaVA (layers 0,2)", fusion_layers=(0, 2)),
    )
}


def to_argv(flags: dict[str, Any], prefix: str = "--") -> list[str]:
    """`{"lora_r": 16, "lora_enable": True, "layers": (0, 2)}` -> `["--lora_r", "16",
    "--lora_enable", "True", "--layers", "0,2"]`; None values are left out."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        argv += [f"{prefix}{name}", text]
    return argv


def _model_flags(pipeline: Pipeline, align: bool) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "model_type": pipeline.model_type,
        "mm_vision_select_layer": pipeline.vision_layers,
    }
    if pipeline.projector:
        return flags | {"mm_projector_type": PROJECTOR_TYPE, "tune_mm_mlp_adapter": True if align else None}
    return flags | {
        "fusion_dropout": FUSION_DROPOUT,
        "layer_ids_to_inject": pipeline.fusion_layers,
        "lora_layer_ids_to_skip": pipeline.fusion_layers,
        "fusion_variant": pipeline.fusion_variant,
    }


def _schedule_flags(budget: Budget, align: bool) -> dict[str, Any]:
    """LLaVA's cosine, or (instruction stages of a `wsd` budget) warmup-stable-decay."""
    if align or budget.schedule == "cosine":
        return {"lr_scheduler_type": "cosine"}
    return {
        "lr_scheduler_type": "warmup_stable_decay",
        "lr_scheduler_kwargs": json.dumps({"num_decay_steps": budget.decay_steps}),
    }


def train_argv(
    preset: Preset,
    data: PlaygroundData,
    pipeline: Pipeline,
    stage: TrainStage,
    backbones: tuple[Path, Path],
    output_dir: Path,
    seed: int,
    projector: Path | None,
) -> list[str]:
    """The `llava.train.train` flags of one stage; `backbones` is `(llm, vision tower)` and
    `projector` the aligned projector a stage after alignment starts from."""
    budget = preset.budget
    llm, vision = backbones
    flags: dict[str, Any] = {
        "model_name_or_path": llm,
        "vision_tower": vision,
        "image_folder": data.image_folder,
        "image_aspect_ratio": "pad",
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "per_device_train_batch_size": budget.batch_size,
        "gradient_accumulation_steps": 1,
        "weight_decay": 0.0,
        "warmup_ratio": budget.warmup_ratio,
        "model_max_length": budget.model_max_length,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        **_model_flags(pipeline, stage.align),
        "version": "plain" if stage.align else CONV_TEMPLATE,
        "data_path": data.pretrain_json if stage.align else data.instruct_json,
        **_schedule_flags(budget, stage.align),
        "max_steps": stage.steps,
        "learning_rate": stage.learning_rate,
        "mm_projector_lr": stage.projector_lr,
        "pretrain_mm_mlp_adapter": projector,
    }
    if not stage.align:
        flags |= {
            "lora_enable": True,
            "lora_r": budget.lora_r,
            "lora_alpha": budget.lora_alpha,
            "lora_dropout": budget.lora_dropout,
            "train_sampling_strategy": "group_by_length",
        }
    return to_argv(flags)
