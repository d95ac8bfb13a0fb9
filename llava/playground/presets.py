"""What the playground runs: the pipelines, declared with typed fields, and the presets (data
sizes, step budget, pipelines, seeds). Every pipeline of a preset gets the same backbones, data,
seeds and instruction-tuning budget; LLaVA-1.5 spends `align_steps` more on its alignment stage.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from llava.playground.datasets import DataSizes

# LLaVA-1.5's alignment stage: lr 1e-3 at a global batch of 256.
LLAVA_ALIGN_LR, LLAVA_ALIGN_BATCH = 1e-3, 256
ModelType = Literal["fusion_llama", "llava_llama"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """Optimisation settings shared by every pipeline of a preset."""

    steps: int  # instruction-tuning optimizer steps
    batch_size: int
    learning_rate: float  # LoRA (and fusion) learning rate, LLaVA's 2e-4 scaled for tiny models
    lora_r: int
    lora_alpha: int
    projector_lr: float  # LLaVA-1.5 stage 2's projector learning rate
    align_steps: int  # LLaVA-1.5 stage 1 (projector alignment on captions)
    align_learning_rate: float | None = None  # LLaVA-1.5 stage 1's rate (None: `alignment_rate`)
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # instruction stages: "cosine" (LLaVA's) or "wsd" (warmup-stable-decay)
    decay_ratio: float = 0.2  # wsd: the peak rate until the last `decay_ratio` of the steps, then cosine to 0
    lora_dropout: float = 0.0  # LLaVA uses 0.05; the masks cost a fifth of a CPU step's time
    model_max_length: int = 512

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "wsd") or not 0.0 < self.decay_ratio <= 1.0:
            raise ValueError(
                f"Budget: schedule must be 'cosine' or 'wsd' (got {self.schedule!r}) and "
                f"decay_ratio must be in (0, 1] (got {self.decay_ratio})"
            )

    @property
    def decay_steps(self) -> int:
        """The WSD schedule's decay length in instruction steps (at least one)."""
        return max(1, round(self.decay_ratio * self.steps))

    @property
    def alignment_rate(self) -> float:
        """The alignment stage's learning rate: `align_learning_rate` if set, else LLaVA-1.5's
        1e-3 at batch 256 moved to `batch_size` by Adam's square-root rule, so that a budget
        copied with another batch size (`dataclasses.replace`) moves its rate too."""
        if self.align_learning_rate is not None:
            return self.align_learning_rate
        return LLAVA_ALIGN_LR * math.sqrt(self.batch_size / LLAVA_ALIGN_BATCH)


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
    """A model and how it is trained: `fusion_llama` (Inverse-LLaVA: vision enters inside the
    attention of `fusion_layers`, which get no LoRA) or `llava_llama` (LLaVA-1.5's projector,
    after an alignment stage when `align`)."""

    name: str
    label: str
    model_type: ModelType
    align: bool = False
    fusion_layers: tuple[int, ...] = (0,)
    fusion_variant: str | None = None  # None keeps the model's default
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

    def train_stages(self, budget: Budget) -> tuple[TrainStage, ...]:
        """The pipeline's stages under `budget`: the same instruction stage for every pipeline."""
        projector_lr = budget.projector_lr if self.projector else None
        finetune = TrainStage("finetune", False, budget.steps, budget.learning_rate, projector_lr)
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
MAIN_PIPELINES = ("inverse_llava", "llava_1_5", "llava_no_align")
ABLATIONS = ("inverse_llava_hd", "ablation_add", "ablation_gated", "ablation_multi_layer")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    data: DataSizes
    budget: Budget
    pipelines: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    eval_batch_size: int = 32
    eval_max_new_tokens: int = 6

    def __post_init__(self) -> None:
        unknown = sorted(set(self.pipelines) - set(PIPELINES))
        if unknown:
            raise ValueError(
                f"Preset {self.name}: unknown pipelines {unknown}; expected among {sorted(PIPELINES)}"
            )


# DataSizes(pretrain_images, train_images, text_only, max_turns, MME images and VQA questions per category)
# Budget(steps, batch_size, learning_rate, lora_r, lora_alpha, projector_lr, align_steps, ...)
_SMOKE = Budget(4, 4, 1e-3, 4, 8, 1e-3, 2, align_learning_rate=1e-3, model_max_length=256, schedule="wsd")
_QUICK = Budget(800, 16, 1e-3, 16, 32, 1e-3, 30, schedule="wsd")
_FULL = Budget(1500, 32, 2e-3, 32, 64, 2e-3, 300)
PRESETS: dict[str, Preset] = {
    "smoke": Preset("smoke", DataSizes(32, 32, 8, 3, 4, 4), _SMOKE, MAIN_PIPELINES, eval_batch_size=16),
    "quick": Preset("quick", DataSizes(2000, 4000, 400, 4, 200, 100), _QUICK, MAIN_PIPELINES),
    "full": Preset(
        "full", DataSizes(10000, 20000, 2000, 6, 300, 150), _FULL, MAIN_PIPELINES + ABLATIONS, (0, 1, 2)
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown playground preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]
