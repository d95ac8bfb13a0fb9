"""The training recipe: the one place that decides what is frozen, what gets LoRA and what is
fully trained, and that builds the optimizer's named parameter groups with their learning rates.

| part                              | Inverse-LLaVA (LoRA)          | LLaVA stage 1 | LLaVA stage 2 (LoRA)          |
|-----------------------------------|-------------------------------|---------------|-------------------------------|
| vision tower                      | frozen                        | frozen        | frozen                        |
| LLM linear layers                 | LoRA, except fusion layers    | frozen        | LoRA                          |
| LoRA's B matrices (LoRA+, opt-in) | lr x `--loraplus_lr_ratio`    | -             | lr x `--loraplus_lr_ratio`    |
| other LLM weights                 | frozen                        | frozen        | frozen                        |
| fusion branch (`*.fusion.*`)      | trained, `--fusion_lr`        | -             | -                             |
| projector (`model.mm_projector`)  | -                             | trained       | trained, `--mm_projector_lr`  |

Without LoRA (and without `--freeze_backbone`), the LLM is fully trained (LLaVA's `finetune.sh`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from llava.model.fusion import FUSION_MODULES
from llava.train.arguments import RunSpec

logger = logging.getLogger(__name__)

GROUPS = ("lora", "fusion", "projector", "llm")


@dataclass
class TrainingPlan:
    """What `apply_recipe` decided. Parameter names are those of the model it returned."""

    uses_lora: bool
    projector_only: bool
    lora_targets: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def full_llm(self) -> bool:
        return bool(self.groups.get("llm"))


def lora_target_modules(model: nn.Module, skip_layers: list[int]) -> list[str]:
    """Full names of the LLM decoder's linear layers (`model.layers.{i}.*`), except in `skip_layers`.

    Never the vision tower's attention (its modules are also called q_proj/k_proj/v_proj), the
    projector, the LM head, or a linear layer inside a fusion branch (fully trained, never LoRA).
    """
    layers = model.model.layers
    bad = [i for i in skip_layers if not 0 <= i < len(layers)]
    if bad:
        raise ValueError(f"--lora_layer_ids_to_skip {bad}: the LLM has layers 0..{len(layers) - 1}")
    if set(range(len(layers))) <= set(skip_layers):
        raise ValueError(
            f"--lora_layer_ids_to_skip {sorted(skip_layers)} skips every layer of the LLM, so LoRA has "
            "nothing to adapt: skip fewer layers or drop --lora_enable"
        )
    in_fusion = {id(m) for f in layers.modules() if isinstance(f, FUSION_MODULES) for m in f.modules()}
    return [
        f"model.layers.{i}.{name}"
        for i, layer in enumerate(layers)
        if i not in skip_layers
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in in_fusion
    ]


def _full_shape(param: nn.Parameter) -> tuple[int, ...]:
    """The parameter's shape, also when ZeRO-3 has partitioned it away (`ds_shape`)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def _full_numel(param: nn.Parameter) -> int:
    return getattr(param, "ds_numel", param.numel())


def _own_parameters(module: nn.Module | None) -> set[int]:
    return set() if module is None else {id(p) for p in module.parameters()}


def apply_recipe(model: nn.Module, spec: RunSpec) -> tuple[nn.Module, TrainingPlan]:
    """Freeze, wrap with LoRA and unfreeze as `spec` says; return the model to train and the plan."""
    base = model
    base.requires_grad_(False)
    fusion = {id(p) for m in base.modules() if isinstance(m, FUSION_MODULES) for p in m.parameters()}
    projector = _own_parameters(getattr(base.model, "mm_projector", None))
    tower = _own_parameters(base.get_vision_tower())
    plan = TrainingPlan(uses_lora=spec.lora is not None, projector_only=spec.projector_only)

    if spec.lora is not None:
        from peft import LoraConfig, get_peft_model

        plan.lora_targets = lora_target_modules(base, spec.lora["skip_layers"])
        config = LoraConfig(
            r=spec.lora["lora_r"],
            lora_alpha=spec.lora["lora_alpha"],
            lora_dropout=spec.lora["lora_dropout"],
            target_modules=plan.lora_targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
    trained_llm = spec.lora is None and not spec.projector_only and not spec.freeze_backbone

    groups: dict[str, list[str]] = {name: [] for name in GROUPS}
    for name, param in model.named_parameters():
        key = id(param)
        if key in tower:
            group = None
        elif key in fusion:
            group = None if spec.projector_only else "fusion"
        elif key in projector:
            group = "projector"
        elif "lora_" in name and param.requires_grad:
            group = "lora"
        else:
            group = "llm" if trained_llm else None
        param.requires_grad_(group is not None)
        if group is not None:
            groups[group].append(name)
    plan.groups = {name: names for name, names in groups.items() if names}
    sizes = {name: _full_numel(param) for name, param in model.named_parameters()}
    counts = {group: sum(sizes[n] for n in names) for group, names in plan.groups.items()}
    logger.info(
        "training recipe: trained parameters per group %s; LoRA on %d linear layers",
        counts,
        len(plan.lora_targets),
    )
    return model, plan


def parameter_groups(
    model: nn.Module,
    plan: TrainingPlan,
    learning_rate: float,
    weight_decay: float,
    fusion_lr: float | None = None,
    projector_lr: float | None = None,
    lora_b_lr_ratio: float | None = None,
) -> list[dict]:
    """Optimizer groups named `{group}` / `{group}_no_decay`, each with its learning rate.

    One-dimensional parameters (biases, norm weights, fusion scales and gates) get no weight decay.
    With `lora_b_lr_ratio` (LoRA+, Hayou et al. 2024) LoRA's B matrices form a group `lora_B` of
    their own at `lora_b_lr_ratio` times the LoRA rate; the A matrices stay in `lora`.
    """
    rates = {"fusion": fusion_lr, "projector": projector_lr}
    members = dict(plan.groups)
    if lora_b_lr_ratio is not None and "lora" in members:
        lora = members.pop("lora")
        members = {
            "lora": [n for n in lora if ".lora_B." not in n],
            "lora_B": [n for n in lora if ".lora_B." in n],
            **members,
        }
        rates["lora_B"] = learning_rate * lora_b_lr_ratio
    params = dict(model.named_parameters())
    out = []
    for group, names in members.items():
        lr = rates.get(group) or learning_rate
        decay = [params[n] for n in names if len(_full_shape(params[n])) >= 2]
        no_decay = [params[n] for n in names if len(_full_shape(params[n])) < 2]
        for suffix, members, wd in (("", decay, weight_decay), ("_no_decay", no_decay, 0.0)):
            if members:
                out.append({"name": group + suffix, "params": members, "lr": lr, "weight_decay": wd})
    return out
