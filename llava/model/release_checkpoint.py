"""The paper's public release's LoRA output folders, read into the matching release variant.

What its training writes (https://github.com/xuhuizhan5/Inverse-LLaVA, `llava/train/train.py`
and `llava/model/language_model/fusion_llama.py`), for a run with LoRA:

| file | content |
|---|---|
| `adapter_config.json`, `adapter_model.*` | LoRA on the non-fusion layers (`layers_to_transform`) |
| `non_lora_trainables.bin` | the fusion tensors, `base_model.model.model.layers.{i}.self_attn.{t}_proj.{name}` |
| `non_lora_trainables_skip_layer.bin` | every tensor of the fusion layers' attention, frozen base copies included (`{t}_proj.original_weight`, `o_proj.weight`) |
| `config.json` | a flat Llama config, `"model_type": "fusion_llama"`, `layer_ids_to_inject` and `fusion_targets` as comma strings, `mm_vision_select_layer` as a string |

`{name}` is `alpha`, `projection_{1,2}.{weight,bias}` for its default layer (`release_mlp`) and
`alpha`, `up_A`, `text_down`, `vision_down`, `vision_norm.weight` for its `--stable_fusion True`
layer (`release_stable`). Its config.json does not record which of the two trained (its
`stable_fusion` is false and `fusion_alpha` stale in both), so the variant, the fusion layers and
the targets are read from the tensor names; a config that disagrees on layers or targets, or a
tensor of neither layer, is an error naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llava.model.configuration import FusionLlamaConfig
from llava.model.llava_formats import any_value, multimodal_fields, must_be

RELEASE_FUSION_FILE = "non_lora_trainables.bin"
RELEASE_SKIP_LAYER_FILE = "non_lora_trainables_skip_layer.bin"
RELEASE_TENSORS = {
    "release_mlp": frozenset(
        {"alpha", "projection_1.weight", "projection_1.bias", "projection_2.weight", "projection_2.bias"}
    ),
    "release_stable": frozenset({"alpha", "up_A", "text_down", "vision_down", "vision_norm.weight"}),
}
# Keys of the release's own config that this project's configs never hold.
_RELEASE_CONFIG_MARKERS = ("layer_ids_to_inject", "use_vision_fusion", "stable_fusion")
_PEFT_PREFIX = "base_model.model."
_FUSION_KEY = re.compile(r"^model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(.+)$")
_BASE_COPY = re.compile(r"^(model\.layers\.\d+\.self_attn\.[qkvo]_proj)\.(?:original_)?(weight|bias)$")
_KNOWN_NAMES = frozenset().union(*RELEASE_TENSORS.values())


def is_release_config(raw: dict) -> bool:
    """Whether a config.json dict was written by the release (not by this project)."""
    return raw.get("model_type") == "fusion_llama" and any(key in raw for key in _RELEASE_CONFIG_MARKERS)


@dataclass
class ReleaseFusionTensors:
    """The fusion tensors of a release folder, under this project's parameter names."""

    variant: str
    layer_ids: list[int]
    targets: list[str]
    fusion: dict[str, torch.Tensor] = field(default_factory=dict)  # model.layers.i.self_attn.fusion...
    base_copies: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # model.layers.i.self_attn.q_proj.weight


def _strip(key: str) -> str:
    return key[len(_PEFT_PREFIX) :] if key.startswith(_PEFT_PREFIX) else key


def _split_fusion_keys(state: dict[str, torch.Tensor], file: Path) -> tuple[dict, dict]:
    """(fusion tensors by (layer, target, name), base copies by our key) of one release file."""
    fusion: dict[tuple[int, str, str], torch.Tensor] = {}
    copies: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        plain = _strip(key)
        copy = _BASE_COPY.match(plain)
        if copy is not None:
            copies[f"{copy.group(1)}.{copy.group(2)}"] = tensor
            continue
        match = _FUSION_KEY.match(plain)
        if match is None or match.group(3) not in _KNOWN_NAMES:
            unknown.append(key)
            continue
        fusion[(int(match.group(1)), match.group(2), match.group(3))] = tensor
    if unknown:
        raise ValueError(
            f"{file}: {len(unknown)} tensor(s) belong to neither of the release's fusion layers, "
            f"e.g. {sorted(unknown)[:4]}"
        )
    return fusion, copies


def _variant_of(fusion: dict[tuple[int, str, str], torch.Tensor], file: Path) -> str:
    """The release layer whose tensor names `fusion` holds, complete for every layer x target."""
    names = {name for _, _, name in fusion}
    variant = next((v for v, expected in RELEASE_TENSORS.items() if names <= expected), None)
    if variant is None:
        raise ValueError(f"{file}: tensors {sorted(names)} mix the release's two fusion layers")
    for layer, target in sorted({(layer, target) for layer, target, _ in fusion}):
        lacking = sorted(RELEASE_TENSORS[variant] - {n for l_, t, n in fusion if (l_, t) == (layer, target)})
        if lacking:
            raise ValueError(f"{file}: the {variant} layer lacks {lacking} in layer {layer}, target {target}")
    return variant


def read_release_fusion(folder: Path, load_pickle) -> ReleaseFusionTensors:
    """The fusion tensors of a release LoRA folder (`load_pickle(path)` reads a `.bin` with
    `weights_only`); the variant, layers and targets are decided from the tensor names."""
    file = folder / RELEASE_FUSION_FILE
    if not file.exists():
        raise FileNotFoundError(f"{file}: missing; a release LoRA folder keeps its fusion layers there")
    fusion, copies = _split_fusion_keys(load_pickle(file), file)
    if not fusion:
        raise ValueError(f"{file}: holds no fusion tensor")
    variant = _variant_of(fusion, file)
    layer_ids = sorted({layer for layer, _, _ in fusion})
    targets = [t for t in ("q", "k", "v") if any(target == t for _, target, _ in fusion)]
    present = {(layer, target) for layer, target, _ in fusion}
    if present != {(layer, target) for layer in layer_ids for target in targets}:
        raise ValueError(f"{file}: fusion tensors for {sorted(present)}, not for every layer x target")
    skip_file = folder / RELEASE_SKIP_LAYER_FILE
    if skip_file.exists():
        more_fusion, more_copies = _split_fusion_keys(load_pickle(skip_file), skip_file)
        for key, tensor in more_fusion.items():
            if key not in fusion or not torch.equal(tensor, fusion[key]):
                raise ValueError(f"{skip_file}: fusion tensor {key} is not the one in {file}")
        copies.update(more_copies)
    out = ReleaseFusionTensors(variant, layer_ids, targets, base_copies=copies)
    for (layer, target, name), tensor in fusion.items():
        out.fusion[f"model.layers.{layer}.self_attn.fusion.branches.{target}.{name}"] = tensor
    return out


def _comma_list(value, cast, name: str, file: Path) -> list:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
    try:
        return [cast(item) for item in items]
    except (TypeError, ValueError):
        raise ValueError(f"{file}: {name}={value!r} is not a comma list of {cast.__name__}") from None


# The release's own config fields (on top of LLaVA's): checked, then dropped for the reason given.
RELEASE_FIELD_RULES = {
    "use_vision_fusion": (must_be((True,)), "the model type says it"),
    "use_mm_proj": (must_be((False,)), "the release's fusion model has no projector"),
    "stable_fusion": (any_value, "false in both of the release's layers; the tensor names decide the layer"),
    "fusion_alpha": (any_value, "a stale initial value; the trained alpha is among the tensors"),
    "fusion_dropout": (any_value, "the release's layers have no dropout"),
    "fusion_hidden_dim": (any_value, "the release's layers do not use it"),
    "fusion_targets": (any_value, "checked against the tensor names"),
    "layer_ids_to_inject": (any_value, "checked against the tensor names"),
    "image_token_id": (must_be((-200,)), "the image placeholder id, which this project shares"),
    "mm_projector_type": (any_value, "the release's fusion model has no projector"),
}


def translate_release_config(raw: dict, tensors: ReleaseFusionTensors, source: Path) -> FusionLlamaConfig:
    """This project's config for a release folder: the LLaVA fields of its flat config.json,
    and the variant, layers and targets of its tensors (cross-checked with what the config
    states about layers and targets)."""
    if "layer_ids_to_inject" in raw:
        stated = sorted(_comma_list(raw["layer_ids_to_inject"], int, "layer_ids_to_inject", source))
        if stated != tensors.layer_ids:
            raise ValueError(
                f"{source}: layer_ids_to_inject {stated} but the fusion tensors are in layers {tensors.layer_ids}"
            )
    if "fusion_targets" in raw:
        stated = _comma_list(raw["fusion_targets"], str, "fusion_targets", source)
        if sorted(stated) != sorted(tensors.targets):
            raise ValueError(
                f"{source}: fusion_targets {stated} but the fusion tensors are for {tensors.targets}"
            )
    fields, _ = multimodal_fields(raw, source, RELEASE_FIELD_RULES)
    try:
        return FusionLlamaConfig(
            **fields,
            fusion_variant=tensors.variant,
            fusion_layer_ids=tensors.layer_ids,
            fusion_targets=tensors.targets,
        )
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


def check_base_copies(model: torch.nn.Module, copies: dict[str, torch.Tensor], folder: Path) -> None:
    """The release saved copies of the frozen base weights of its fusion layers: they must equal
    the base model's, or the folder was trained on another base."""
    params = dict(model.named_parameters())
    for key, tensor in copies.items():
        if key not in params:
            raise KeyError(f"{folder}: base copy {key} matches no parameter of the model")
        base = params[key].detach().cpu()
        # compared in the copy's precision: the release kept them in its training dtype
        if base.shape != tensor.shape or not torch.equal(base.to(tensor.dtype), tensor):
            raise ValueError(
                f"{folder}: the saved copy of {key} differs from the base model's; was it trained on another base?"
            )
