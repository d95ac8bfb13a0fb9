"""Complete, safetensors-only checkpoints that `llava.model.builder.load_pretrained_model` loads.

| recipe            | weights written                                                            |
|-------------------|----------------------------------------------------------------------------|
| LoRA              | `adapter_model.safetensors` + `adapter_config.json` + `non_lora_trainables.safetensors` |
| projector only    | `mm_projector.safetensors` (LLaVA stage 1)                                 |
| full LLM          | `model.safetensors` (the whole model, vision tower included)               |

plus, always, the multimodal `config.json`, the tokenizer and the image processor. Under ZeRO-3
every rank joins the gathers (`deepspeed.zero.GatheredParameters`); the main process writes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterable

import torch
from safetensors.torch import save_file
from torch import nn

from llava.model.builder import MM_PROJECTOR, NON_LORA_TRAINABLES
from llava.model.llava_formats import LLAVA_MM_PROJECTOR
from llava.model.weights import SAFETENSORS_SINGLE, load_weights
from llava.train.model_card import TrainingCard, write_model_card
from llava.train.recipe import TrainingPlan
from llava.train.resume import ADAPTER_WEIGHTS

logger = logging.getLogger(__name__)

_PEFT_PREFIX = "base_model.model."
_GATHER_CHUNK = 64


def gathered_parameters(params: list[nn.Parameter], modifier_rank: int | None = None):
    """`deepspeed.zero.GatheredParameters` over the ZeRO-3 partitioned ones among `params`
    (a no-op context without ZeRO-3). With `modifier_rank`, that rank's writes are kept."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank)


def gather_parameters(named: Iterable[tuple[str, nn.Parameter]], is_main: bool) -> dict[str, torch.Tensor]:
    """Full CPU copies of `named` parameters on the main process (empty elsewhere).

    Collective under ZeRO-3: every rank must call it with the same parameters.
    """
    items = list(named)
    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(items), _GATHER_CHUNK):
        chunk = items[start : start + _GATHER_CHUNK]
        with gathered_parameters([p for _, p in chunk]):
            if is_main:
                for name, param in chunk:
                    out[name] = param.detach().to("cpu", copy=True).contiguous()
    return out


def base_model_of(model: nn.Module) -> nn.Module:
    """The multimodal model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _strip(name: str) -> str:
    return name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name


def save_trained_model(
    model: nn.Module,
    plan: TrainingPlan,
    output_dir: str,
    tokenizer,
    image_processor,
    is_main: bool,
    card: TrainingCard | None = None,
) -> None:
    """Write a complete checkpoint of `model` (see the module docstring) into `output_dir`, with
    its model card (`README.md`) when `card` is given."""
    base = base_model_of(model)
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
    if plan.uses_lora:
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        state = gather_parameters(trained, is_main)
        if is_main:
            lora = {n: t for n, t in state.items() if "lora_" in n}
            # No embedding layers: the recipe never trains or resizes them. PEFT's "auto" would
            # read the base's llama config.json as the multimodal config class to compare sizes.
            model.save_pretrained(
                output_dir, state_dict=lora, safe_serialization=True, save_embedding_layers=False
            )
            others = {_strip(n): t for n, t in state.items() if "lora_" not in n}
            save_file(others, os.path.join(output_dir, NON_LORA_TRAINABLES), metadata={"format": "pt"})
    elif plan.projector_only:
        state = gather_parameters(
            base.model.mm_projector.named_parameters(prefix="model.mm_projector"), is_main
        )
        if is_main:
            save_file(state, os.path.join(output_dir, MM_PROJECTOR), metadata={"format": "pt"})
    else:
        state = gather_parameters(base.named_parameters(), is_main)
        if is_main:
            base.save_pretrained(output_dir, state_dict=state, safe_serialization=True)
    if is_main:
        config = copy.deepcopy(base.config)
        config.use_cache = True  # turned off for training only
        config.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        image_processor.save_pretrained(output_dir)
        if card is not None:  # written last: it lists the files, and replaces PEFT's template card
            kind = "lora" if plan.uses_lora else "projector" if plan.projector_only else "full"
            write_model_card(output_dir, config, kind, card)
        logger.info("saved the trained weights, config, tokenizer and image processor to %s", output_dir)


def check_shape(file: str, name: str, saved: torch.Tensor, param: nn.Parameter) -> None:
    """The saved tensor has the parameter's full shape (also when ZeRO-3 partitioned it)."""
    expected = tuple(getattr(param, "ds_shape", param.shape))
    if tuple(saved.shape) != expected:
        raise ValueError(
            f"{file}: {name} has shape {tuple(saved.shape)}, the model's parameter {expected} (was the "
            "checkpoint written with other --fusion_targets, --layer_ids_to_inject or LoRA settings?)"
        )


def _peft_key(name: str, adapter_name: str) -> str:
    """The key PEFT saves a LoRA parameter under (its name without the adapter name)."""
    return name.replace(f".{adapter_name}.", ".")


def _check_adapter_state(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """`state` (keys as PEFT saves them) holds every LoRA tensor of `model`, no other key, each
    with the model's shape; errors name the file and the keys."""
    from peft import get_peft_model_state_dict

    expected = get_peft_model_state_dict(model, save_embedding_layers=False)  # as `save_trained_model` saves
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise KeyError(f"{path}: {len(unexpected)} key(s) without a LoRA parameter, e.g. {unexpected[:3]}")
    missing = sorted(set(expected) - set(state))
    if missing:
        raise KeyError(
            f"{path}: {len(missing)} of the model's {len(expected)} LoRA tensors are missing, e.g. "
            f"{missing[:3]}; resuming would leave them at their initial values (was the checkpoint written "
            "with other --lora_layer_ids_to_skip or LoRA targets, or is the file damaged?)"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, the model's parameter "
                f"{tuple(expected[name].shape)} (was the checkpoint written with another --lora_r?)"
            )


def load_projector(model: nn.Module, path: str) -> None:
    """Load a stage-1 projector (`mm_projector.safetensors`, LLaVA-1.5's `mm_projector.bin` read
    weights-only, or the folder holding one; keys `model.mm_projector.*`) into `model`, also when
    ZeRO-3 has partitioned it."""
    names = (MM_PROJECTOR, LLAVA_MM_PROJECTOR)
    candidates = [os.path.join(path, name) for name in names] if os.path.isdir(path) else [path]
    file = next((f for f in candidates if f.endswith((".safetensors", ".bin")) and os.path.isfile(f)), None)
    if file is None:
        raise FileNotFoundError(
            f"--pretrain_mm_mlp_adapter {path}: expected {MM_PROJECTOR} or LLaVA's {LLAVA_MM_PROJECTOR} "
            "(or a folder holding one)"
        )
    state = load_weights(file)
    params = dict(model.model.mm_projector.named_parameters(prefix="model.mm_projector"))
    if set(state) != set(params):
        raise KeyError(f"{file}: keys {sorted(state)} do not match the projector's {sorted(params)}")
    for name, param in params.items():
        check_shape(file, name, state[name], param)
    with gathered_parameters(list(params.values()), modifier_rank=0), torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].to(param.dtype))
    logger.info("loaded the pre-trained projector from %s", file)


def _weight_files(plan: TrainingPlan) -> list[str]:
    if plan.uses_lora:
        return [ADAPTER_WEIGHTS, NON_LORA_TRAINABLES]
    return [MM_PROJECTOR] if plan.projector_only else [SAFETENSORS_SINGLE]


def load_trained_weights(model: nn.Module, plan: TrainingPlan, checkpoint: str) -> None:
    """Put the trained weights of `checkpoint` (written by `save_trained_model`) back into `model`,
    for resuming.

    Every file is read and checked before anything is copied: no unknown key, every shape the
    model's, LoRA's file holding every LoRA tensor, and together a saved value for every trained
    parameter. A parameter counts as loaded only when a file holds its key. Any failure raises,
    naming the file and the keys, with `model` unchanged.
    """
    params = dict(model.named_parameters())
    by_plain_name = {_strip(n): p for n, p in params.items()}
    adapter_name = getattr(model, "active_adapter", "default")
    states: dict[str, dict[str, torch.Tensor]] = {}
    loaded: set[int] = set()
    for file_name in _weight_files(plan):
        path = os.path.join(checkpoint, file_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cannot resume: {path} is missing")
        state = states[path] = load_weights(path)
        if file_name == ADAPTER_WEIGHTS:
            _check_adapter_state(model, state, path)
            loaded |= {
                id(p) for n, p in params.items() if "lora_" in n and _peft_key(n, adapter_name) in state
            }
            continue
        for name, tensor in state.items():
            if name not in by_plain_name:
                raise KeyError(f"{path}: {name} matches no parameter of the model")
            check_shape(path, name, tensor, by_plain_name[name])
            loaded.add(id(by_plain_name[name]))
    missing = [n for n, p in params.items() if p.requires_grad and id(p) not in loaded]
    if missing:
        raise KeyError(
            f"cannot resume from {checkpoint}: {', '.join(states)} hold no value for {len(missing)} trained "
            f"parameter(s), e.g. {missing[:3]}"
        )
    with torch.no_grad():
        for path, state in states.items():
            if path.endswith(ADAPTER_WEIGHTS):
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(model, state)
                continue
            for name, tensor in state.items():
                target = by_plain_name[name]
                target.copy_(tensor.to(target.dtype))
    logger.info("resumed trained weights from %s", checkpoint)
