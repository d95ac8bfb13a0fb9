"""LLaVA-1.5's own checkpoint files (https://github.com/haotian-liu/LLaVA), as this project reads them.

What LLaVA's code writes (`llava/train/train.py`, `llava/model/llava_arch.py`,
`llava/model/language_model/llava_llama.py`, `llava/model/builder.py`):

- `config.json`: a *flat* Llama config (no `vision_config`) with `"model_type": "llava"` (its
  `LlavaConfig`; LLaVA-NeXT's is `"llava_llama"`) and the `mm_*` fields its training sets. The
  tower's architecture is not stored: LLaVA builds the tower from `mm_vision_tower` (a hub id or
  a folder), so this project reads that tower's `CLIPVisionConfig` into `vision_config`.
- merged models: `pytorch_model-0000K-of-0000N.bin` + `pytorch_model.bin.index.json` (or one
  `pytorch_model.bin`, or safetensors), keys `model.*`, `lm_head.*`, `model.mm_projector.{0,2}.*`
  and possibly `model.vision_tower.vision_tower.*`, which LLaVA's loader ignores unless the tower
  was trained (`unfreeze_mm_vision_tower`): it loads the tower from `mm_vision_tower`.
- LoRA runs: `adapter_config.json` + `adapter_model.bin` (or `.safetensors`), and
  `non_lora_trainables.bin` with the trained non-LoRA tensors under PEFT's names
  (`base_model.model.model.mm_projector.0.weight`); `config.json`'s `architectures` is the base
  LLM's (`LlamaForCausalLM`), as the config was copied from it, so it says nothing.
- stage-1 runs: `mm_projector.bin`, keys `model.mm_projector.*`.

Every field of such a config is translated, or dropped for a stated reason, or refused when
this project cannot do what LLaVA would (`FIELD_RULES`); a field it does not know is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig

from llava.model.configuration import LlavaLlamaConfig
from llava.model.paths import resolve_location

logger = logging.getLogger(__name__)

LLAVA_MODEL_TYPES = ("llava", "llava_llama")
LLAVA_NON_LORA_TRAINABLES = "non_lora_trainables.bin"
LLAVA_MM_PROJECTOR = "mm_projector.bin"
# LLaVA's `build_vision_projector` default when a config has no `mm_projector_type` (LLaVA v1).
LLAVA_DEFAULT_PROJECTOR = "linear"

# Fields of the file or of transformers' bookkeeping, never model settings.
_BOOKKEEPING = (
    "model_type",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_name_or_path",
)
# Llama fields transformers 4.x wrote that LlamaConfig still reads (it converts `rope_scaling`).
_LEGACY_LLAMA_FIELDS = ("rope_scaling", "rope_theta", "max_sequence_length")


def must_be(expected) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return None if value in expected else f"only {' or '.join(map(repr, expected))} can be honoured"

    return check


def any_value(_value) -> None:
    return None


# field -> (check: a reason it cannot be honoured, or None; why it is dropped, or None if translated)
FIELD_RULES: dict[str, tuple[Callable[[object], str | None], str | None]] = {
    "mm_vision_tower": (any_value, None),
    "mm_vision_select_layer": (any_value, None),
    "mm_vision_select_feature": (must_be(("patch", "cls_patch")), None),
    "mm_hidden_size": (any_value, None),
    "mm_projector_type": (any_value, None),
    "image_aspect_ratio": (must_be(("pad", "square", None)), None),
    "unfreeze_mm_vision_tower": (must_be((True, False)), None),
    "mm_use_im_start_end": (
        must_be((False,)),
        "image start/end tokens are not supported (LLaVA-1.5 trains without them)",
    ),
    "mm_use_im_patch_token": (
        must_be((False,)),
        "an <im_patch> token is not supported (LLaVA-1.5 trains without it)",
    ),
    "mm_patch_merge_type": (must_be(("flat",)), "`flat` is the only merge this project does"),
    "use_mm_proj": (any_value, "set by LLaVA's training, read by none of its model code"),
    "tune_mm_mlp_adapter": (any_value, "a training setting (stage 1)"),
    "freeze_mm_mlp_adapter": (any_value, "a training setting"),
    "mm_projector_lr": (any_value, "a training setting"),
    "mm_vision_tower_lr": (any_value, "a training setting"),
    "tokenizer_padding_side": (
        any_value,
        "where LLaVA's forward pads a batch; this project pads left to generate, right to train",
    ),
    "tokenizer_model_max_length": (
        any_value,
        "LLaVA's forward cuts longer sequences silently; this project never truncates",
    ),
    "image_grid_pinpoints": (any_value, "read only by the `anyres` aspect ratio, which is refused"),
    "mm_resampler_type": (must_be((None,)), "no resampler is supported"),
    "tune_mm_vision_resampler": (must_be((False,)), "no resampler is supported"),
    "freeze_mm_vision_resampler": (must_be((False,)), "no resampler is supported"),
    "use_s2": (must_be((False,)), "S2 multi-scale towers are not supported"),
    "max_length": (any_value, "a generation default of transformers 4; the runners set max_new_tokens"),
}


@dataclass
class LlavaCheckpointConfig:
    """A LLaVA config.json translated: the config, and whether the tower's weights are the
    checkpoint's own (trained, `unfreeze_mm_vision_tower`) rather than `mm_vision_tower`'s."""

    config: LlavaLlamaConfig
    tower_in_checkpoint: bool
    tower_location: str


def is_llava_config(raw: dict) -> bool:
    """Whether a config.json dict is LLaVA's own flat format (not transformers' llava format,
    which has a `text_config`, nor this project's, which has a `vision_config`)."""
    return (
        raw.get("model_type") in LLAVA_MODEL_TYPES and "text_config" not in raw and "vision_config" not in raw
    )


def parse_select_layer(value, source: str) -> list[int]:
    """`mm_vision_select_layer` as a list of ints: an int, a list of ints, or a string (`"-2"`,
    `"-1,-2"`) as some training scripts save it.

    Raises:
        ValueError: naming `source` and the value.
    """
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if all(part.lstrip("-").isdigit() for part in parts):
            return [int(part) for part in parts]
    elif isinstance(value, int) and not isinstance(value, bool):
        return [value]
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return list(value)
    raise ValueError(
        f"{source}: mm_vision_select_layer {value!r} is not an int, a list of ints or a string like '-1,-2'"
    )


def _llama_fields() -> frozenset[str]:
    return frozenset(LlamaConfig().to_dict()) | frozenset(_LEGACY_LLAMA_FIELDS)


def _check_fields(raw: dict, source: str, rules: dict) -> None:
    """Every field is a Llama field or has a rule; a rule's value must be one it can honour."""
    llama = _llama_fields()
    unknown = sorted(k for k in raw if k not in llama and k not in rules and k not in _BOOKKEEPING)
    if unknown:
        raise ValueError(
            f"{source}: unknown field(s) {unknown} in a LLaVA config; this loader translates LLaVA-1.5's "
            "fields only and will not guess what these do"
        )
    for name, (check, dropped) in rules.items():
        if name not in raw:
            continue
        problem = check(raw[name])
        if problem:
            reason = f" ({dropped})" if dropped else ""
            raise ValueError(f"{source}: {name}={raw[name]!r}: {problem}{reason}")
    if "mm_use_im_patch_token" not in raw:
        raise ValueError(
            f"{source}: mm_use_im_patch_token is absent, which LLaVA's loader reads as true (an extra "
            "<im_patch> token); only false can be honoured: write it into the config if it trained without one"
        )
    for name in ("mm_vision_tower", "mm_vision_select_layer"):
        if raw.get(name) is None:
            raise ValueError(f"{source}: {name} is missing; LLaVA's training always writes it")


def _aspect_ratio(value) -> str:
    """LLaVA pads to a square for `pad` and otherwise runs the tower's processor alone (`square`)."""
    return "pad" if value == "pad" else "square"


def _tower_location(value: str, source: str) -> str:
    try:
        return resolve_location(value, "vision tower")
    except (FileNotFoundError, NotADirectoryError) as error:
        raise type(error)(f"{source}: mm_vision_tower: {error}") from error


def multimodal_fields(raw: dict, source: str | Path, extra_rules: dict | None = None) -> tuple[dict, str]:
    """The fields of a `LlavaLlamaConfig` from a LLaVA-style flat config.json dict read
    from `source` (LLaVA's own, or a fork's with `extra_rules` for its fields), and the tower's
    resolved location.

    The tower's `CLIPVisionConfig` (from `mm_vision_tower`) gives `vision_config`; a stored
    `mm_hidden_size` must equal its width x the selected layers.

    Raises:
        ValueError: an unknown field, a value this project cannot honour, or an `mm_hidden_size`
            that disagrees with the tower, naming `source` and the field.
        FileNotFoundError: `mm_vision_tower` is a local path that does not exist.
    """
    source = str(source)
    rules = {**FIELD_RULES, **(extra_rules or {})}
    _check_fields(raw, source, rules)
    layers = parse_select_layer(raw["mm_vision_select_layer"], source)
    tower = _tower_location(raw["mm_vision_tower"], source)
    vision_config = CLIPVisionConfig.from_pretrained(tower)
    derived = vision_config.hidden_size * len(layers)
    stored = raw.get("mm_hidden_size")
    if stored is not None and stored != derived:
        raise ValueError(
            f"{source}: mm_hidden_size={stored} disagrees with the vision tower {raw['mm_vision_tower']}: "
            f"hidden_size {vision_config.hidden_size} x {len(layers)} selected layer(s) {layers} = {derived}"
        )
    llama = _llama_fields()
    fields = {k: v for k, v in raw.items() if k in llama and k not in _BOOKKEEPING}
    if "rope_scaling" in fields and fields["rope_scaling"] is None:  # transformers 4's "no scaling"
        del fields["rope_scaling"]
    dropped = sorted(name for name, (_, reason) in rules.items() if reason and name in raw)
    logger.info("%s: LLaVA-style config; fields without effect here, dropped: %s", source, dropped or "none")
    fields.update(
        vision_config=vision_config.to_dict(),
        mm_vision_tower=raw["mm_vision_tower"],
        mm_vision_select_layer=layers,
        mm_vision_select_feature=raw.get("mm_vision_select_feature", "patch"),
        image_aspect_ratio=_aspect_ratio(raw.get("image_aspect_ratio")),
        mm_hidden_size=derived,
    )
    return fields, tower


def translate_llava_config(raw: dict, source: str | Path) -> LlavaCheckpointConfig:
    """The `LlavaLlamaConfig` of a LLaVA config.json dict read from `source` (see
    `multimodal_fields` for what is checked)."""
    fields, tower = multimodal_fields(raw, source)
    try:
        config = LlavaLlamaConfig(
            **fields, mm_projector_type=raw.get("mm_projector_type", LLAVA_DEFAULT_PROJECTOR)
        )
    except ValueError as error:  # a value the config class refuses: say which file holds it
        raise ValueError(f"{source}: {error}") from error
    return LlavaCheckpointConfig(config, bool(raw.get("unfreeze_mm_vision_tower", False)), tower)


def strip_peft_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`non_lora_trainables` keys as LLaVA's loader reads them: `base_model.` removed, then one
    more `model.` when the keys start with `model.model.` (PEFT's `base_model.model.` wrapper)."""
    state = {(k[len("base_model.") :] if k.startswith("base_model.") else k): v for k, v in state.items()}
    if any(k.startswith("model.model.") for k in state):
        state = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in state.items()}
    return state
