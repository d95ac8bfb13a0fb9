"""Typed, validated configurations of the two multimodal language models.

`FusionLlamaConfig` (Inverse-LLaVA, model_type `fusion_llama`) and `LlavaLlamaConfig` (the
LLaVA-1.5 baseline, model_type `llava_llama`) extend `LlamaConfig` with the vision tower settings
they share (`MultimodalLlamaConfig`). Every field is checked when the config is built; the vision
width `mm_hidden_size` is derived from the tower and the selected layers, and a stored value that
disagrees is an error (the HD variant concatenates two layers: 2 x 1024 = 2048).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlamaConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from llava.mm_utils import IMAGE_ASPECT_RATIOS

# The project's variants, then the public release's two layers (llava/model/release_fusion.py).
FUSION_VARIANTS = ("concat", "add", "gated", "mlp", "release_mlp", "release_stable")
RELEASE_VARIANTS = ("release_mlp", "release_stable")
DEFAULT_FUSION_DROPOUT = 0.1
FUSION_TARGETS = ("q", "k", "v")
VISION_SELECT_FEATURES = ("patch", "cls_patch")
PROJECTOR_PATTERN = re.compile(r"^(linear|identity|mlp(\d+)x_gelu)$")

# openai/clip-vit-large-patch14-336, the tower of LLaVA-1.5 and Inverse-LLaVA (METHOD.md section 5).
CLIP_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 336,
    "projection_dim": 768,
}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int_list(value: int | list[int], field: str) -> list[int]:
    values = [value] if _is_int(value) else list(value) if isinstance(value, Sequence) else [value]
    if not values or not all(_is_int(v) for v in values):
        raise ValueError(f"{field} must be an int or a non-empty list of ints, got {value!r}")
    return values


def _check_choice(field: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of the allowed values {list(allowed)}")


def _check_finite(field: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")


def _check_positive_int(field: str, value) -> None:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{field} must be a positive int, got {value!r}")


def _check_bool(field: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be True or False, got {value!r}")


@strict
class MultimodalLlamaConfig(LlamaConfig):
    """A Llama decoder plus a CLIP-style vision tower; shared by both multimodal models.

    Args:
        vision_config: the tower's `CLIPVisionConfig` (or its dict); defaults to CLIP ViT-L/14-336.
        mm_vision_tower: where the tower's weights come from (local folder or hub id).
        mm_vision_select_layer: hidden-state layer(s) of the tower to use; several layers are
            concatenated on the feature axis (`[-1, -2]` for Inverse-LLaVA-HD).
        mm_vision_select_feature: `patch` (CLS dropped) or `cls_patch`.
        image_aspect_ratio: `pad`, `resize` or `square` (see `llava.mm_utils.process_images`).
        mm_hidden_size: the vision width d_v; derived, and checked when given.
    """

    model_type = "multimodal_llama"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_L_336
        )
    }

    vision_config: dict | PreTrainedConfig | None = None
    mm_vision_tower: str | None = None
    mm_vision_select_layer: int | list[int] = -2
    mm_vision_select_feature: Literal["patch", "cls_patch"] = "patch"
    image_aspect_ratio: Literal["pad", "resize", "square"] = "pad"
    mm_hidden_size: int | None = None

    def __post_init__(self, **kwargs):
        self.mm_vision_select_layer = _as_int_list(self.mm_vision_select_layer, "mm_vision_select_layer")
        _check_choice("mm_vision_select_feature", self.mm_vision_select_feature, VISION_SELECT_FEATURES)
        _check_choice("image_aspect_ratio", self.image_aspect_ratio, IMAGE_ASPECT_RATIOS)
        if self.mm_vision_tower is not None and not isinstance(self.mm_vision_tower, str):
            raise ValueError(
                f"mm_vision_tower must be a path or hub id (a string), got {self.mm_vision_tower!r}"
            )
        if self.mm_hidden_size is not None:
            _check_positive_int("mm_hidden_size", self.mm_hidden_size)
        super().__post_init__(**kwargs)
        depth = self.vision_config.num_hidden_layers
        for layer in self.mm_vision_select_layer:
            if not -(depth + 1) <= layer <= depth:
                raise ValueError(
                    f"mm_vision_select_layer {layer} is out of range for a vision tower with {depth} layers"
                )
        derived = self.vision_config.hidden_size * len(self.mm_vision_select_layer)
        if self.mm_hidden_size is None:
            self.mm_hidden_size = derived
        elif self.mm_hidden_size != derived:
            raise ValueError(
                f"mm_hidden_size={self.mm_hidden_size} disagrees with the vision tower: hidden size "
                f"{self.vision_config.hidden_size} x {len(self.mm_vision_select_layer)} selected layer(s) "
                f"{self.mm_vision_select_layer} = {derived}"
            )

    @property
    def num_image_tokens(self) -> int:
        """Positions one image occupies in the sequence (576 for CLIP-L/14 at 336 px)."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side * side + (1 if self.mm_vision_select_feature == "cls_patch" else 0)


@strict
class FusionLlamaConfig(MultimodalLlamaConfig):
    """Inverse-LLaVA: vision features injected into the q/k/v projections of chosen layers.

    Args:
        fusion_variant: `concat` (the paper, Eqs. 3-5), `add`, `gated` or `mlp` (ablations), or
            the public release's layers `release_mlp` (its `--stable_fusion False`) and
            `release_stable` (its `--stable_fusion True`), see docs/model.md.
        fusion_layer_ids: the layers that receive the fusion term (default `[0]`).
        fusion_targets: which projections receive it, a subset of `q`, `k`, `v`.
        fusion_alpha: initial value of the learnable per-target scale.
        fusion_dropout: dropout on the fusion branch input during training (default 0.1; the
            release's layers have none, so 0 there).
        fusion_hidden_dim: hidden width of the `mlp` variant (default: the LLM's hidden size);
            rejected for the other variants, which have no hidden layer.
        vision_stream_norm: a learnable RMSNorm over d_v on the vision stream before use. Off by
            default, as in the paper's recipe (the release's `--stable_fusion False`).
    """

    model_type = "fusion_llama"

    mm_vision_select_layer: int | list[int] = -1
    fusion_variant: Literal["concat", "add", "gated", "mlp", "release_mlp", "release_stable"] = "concat"
    fusion_layer_ids: list[int] | None = None
    fusion_targets: list[str] | None = None
    fusion_alpha: float = 1.0
    fusion_dropout: float | None = None
    fusion_hidden_dim: int | None = None
    vision_stream_norm: bool = False

    def __post_init__(self, **kwargs):
        if self.fusion_layer_ids is None:
            self.fusion_layer_ids = [0]
        if self.fusion_targets is None:
            self.fusion_targets = list(FUSION_TARGETS)
        _check_choice("fusion_variant", self.fusion_variant, FUSION_VARIANTS)
        release = self.fusion_variant in RELEASE_VARIANTS
        if self.fusion_dropout is None:
            self.fusion_dropout = 0.0 if release else DEFAULT_FUSION_DROPOUT
        if release:
            self._check_release_layer()
        _check_finite("fusion_alpha", self.fusion_alpha)
        _check_finite("fusion_dropout", self.fusion_dropout)
        _check_bool("vision_stream_norm", self.vision_stream_norm)
        super().__post_init__(**kwargs)
        self.fusion_layer_ids = sorted(set(_as_int_list(self.fusion_layer_ids, "fusion_layer_ids")))
        bad_layers = [i for i in self.fusion_layer_ids if not 0 <= i < self.num_hidden_layers]
        if bad_layers:
            raise ValueError(f"fusion_layer_ids {bad_layers} are outside 0..{self.num_hidden_layers - 1}")
        targets = [self.fusion_targets] if isinstance(self.fusion_targets, str) else list(self.fusion_targets)
        if not targets or any(t not in FUSION_TARGETS for t in targets) or len(set(targets)) != len(targets):
            raise ValueError(
                f"fusion_targets={targets!r}: expected distinct names among the allowed values {list(FUSION_TARGETS)}"
            )
        self.fusion_targets = [t for t in FUSION_TARGETS if t in targets]
        if not 0.0 <= self.fusion_dropout < 1.0:
            raise ValueError(f"fusion_dropout must be in [0, 1), got {self.fusion_dropout}")
        if self.fusion_hidden_dim is not None:
            if self.fusion_variant != "mlp":
                raise ValueError(
                    f"fusion_hidden_dim={self.fusion_hidden_dim} only applies to the 'mlp' fusion variant; "
                    f"the {self.fusion_variant!r} variant has no hidden layer (leave it unset)"
                )
            _check_positive_int("fusion_hidden_dim", self.fusion_hidden_dim)

    def _check_release_layer(self) -> None:
        """The release's layers have no dropout, no hidden width and their own vision norm."""
        unused = {
            "fusion_dropout": (self.fusion_dropout, 0.0),
            "fusion_hidden_dim": (self.fusion_hidden_dim, None),
            "vision_stream_norm": (self.vision_stream_norm, False),
        }
        for name, (value, only) in unused.items():
            if value != only:
                raise ValueError(
                    f"{name}={value!r} has no effect on the release's {self.fusion_variant!r} layer "
                    f"(it must be {only!r}); see docs/model.md"
                )


@strict
class LlavaLlamaConfig(MultimodalLlamaConfig):
    """The LLaVA-1.5 baseline: a projector maps vision features into the token-embedding space.

    Args:
        mm_projector_type: `linear`, `identity` or `mlp{N}x_gelu` (LLaVA-1.5: `mlp2x_gelu`).
    """

    model_type = "llava_llama"

    mm_projector_type: str = "mlp2x_gelu"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        match = (
            PROJECTOR_PATTERN.match(self.mm_projector_type)
            if isinstance(self.mm_projector_type, str)
            else None
        )
        if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
            raise ValueError(
                f"unknown mm_projector_type {self.mm_projector_type!r}; expected linear, identity or mlp<N>x_gelu"
            )
        if self.mm_projector_type == "identity" and self.mm_hidden_size != self.hidden_size:
            raise ValueError(
                f"an identity projector needs mm_hidden_size ({self.mm_hidden_size}) == hidden_size ({self.hidden_size})"
            )
