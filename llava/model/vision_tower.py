"""The frozen vision tower: CLIP or SigLIP (SigLIP 2's fixed-resolution checkpoints are SigLIP),
chosen from the tower's config (`model_type`), never from its name.

| tower config `model_type` | library model | CLS position | patches |
|---|---|---|---|
| `clip_vision_model` (or a full `clip` config) | `CLIPVisionModel` | 1, first | (image_size / patch_size)^2 |
| `siglip_vision_model` (or a full `siglip` config) | `SiglipVisionModel` | none | (image_size / patch_size)^2 |

SigLIP has no CLS token, so `patch` keeps every position and `cls_patch` is refused. SigLIP 2's
fixed-resolution checkpoints (`google/siglip2-so400m-patch14-384`, ...) ship `siglip` configs and
load here; its NaFlex checkpoints (`siglip2_vision_model`, variable resolution with patch masks)
are not supported. The state-dict keys are the library model's under `vision_tower.`
(`vision_tower.vision_model.*`), as in LLaVA's checkpoints.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from llava.model.paths import resolve_location

VISION_SELECT_FEATURES = ("patch", "cls_patch")


@dataclass(frozen=True)
class TowerKind:
    """A vision tower family: its config and model classes and how many CLS positions it puts
    before the patches."""

    name: str
    config_cls: type
    model_cls: type
    cls_positions: int


TOWERS: dict[str, TowerKind] = {
    "clip_vision_model": TowerKind("CLIP", CLIPVisionConfig, CLIPVisionModel, cls_positions=1),
    "siglip_vision_model": TowerKind("SigLIP", SiglipVisionConfig, SiglipVisionModel, cls_positions=0),
}
# A full (image + text) checkpoint's model_type -> its vision model's.
_FULL_MODEL_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


def tower_kind(vision_config: PretrainedConfig) -> TowerKind:
    """The tower family of a vision config (an unknown `model_type` is an error naming it)."""
    model_type = vision_config.model_type
    if model_type not in TOWERS:
        raise ValueError(
            f"vision tower model_type {model_type!r} is not supported; supported: {sorted(TOWERS)} "
            "(CLIP and SigLIP, including SigLIP 2's fixed-resolution checkpoints)"
        )
    return TOWERS[model_type]


def num_tower_patches(vision_config: PretrainedConfig) -> int:
    """Patch positions of one image (576 for CLIP-L/14 at 336 px, 729 for SigLIP-so400m/14 at 384)."""
    return (vision_config.image_size // vision_config.patch_size) ** 2


def check_select_feature(vision_config: PretrainedConfig, select_feature: str) -> None:
    """`patch` drops the CLS position (if any); `cls_patch` keeps it and needs a tower that has one."""
    if select_feature not in VISION_SELECT_FEATURES:
        raise ValueError(
            f"unknown mm_vision_select_feature {select_feature!r}; expected one of {list(VISION_SELECT_FEATURES)}"
        )
    kind = tower_kind(vision_config)
    if select_feature == "cls_patch" and kind.cls_positions == 0:
        raise ValueError(
            f"mm_vision_select_feature='cls_patch' needs a CLS token, and a {kind.name} tower has none "
            "(use patch)"
        )


def read_vision_config(location: str) -> PretrainedConfig:
    """The vision config of a tower checkpoint (a vision-only or a full image-text one), by the
    `model_type` its config.json states."""
    resolved = resolve_location(location, "vision tower")
    raw, _ = PretrainedConfig.get_config_dict(resolved)
    model_type = raw.get("model_type")
    model_type = _FULL_MODEL_TYPES.get(model_type, model_type)
    if model_type not in TOWERS:
        raise ValueError(
            f"vision tower {location}: config model_type {raw.get('model_type')!r} is not supported; supported: "
            f"{sorted(TOWERS) + sorted(_FULL_MODEL_TYPES)}"
        )
    return TOWERS[model_type].config_cls.from_pretrained(resolved)


class VisionTower(nn.Module):
    """Wraps the library's vision model; returns the selected hidden states as `[N, P, d_v]`.

    Several selected layers are concatenated on the feature axis (d_v = hidden x layers); the
    CLS position (CLIP) is dropped for `patch`. The tower is frozen: it runs without gradients.
    """

    def __init__(
        self, vision_config: PretrainedConfig, select_layers: list[int], select_feature: str = "patch"
    ):
        super().__init__()
        check_select_feature(vision_config, select_feature)
        self.kind = tower_kind(vision_config)
        self.vision_tower = self.kind.model_cls(vision_config)
        self.vision_tower.requires_grad_(False)
        self.select_layers = list(select_layers)
        self.select_feature = select_feature

    @property
    def config(self) -> PretrainedConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size * len(self.select_layers)

    @property
    def num_patches(self) -> int:
        return num_tower_patches(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: [N, 3, H, W] -> features [N, P, d_v]
        outputs = self.vision_tower(pixel_values.to(self.dtype), output_hidden_states=True)
        hidden = outputs.hidden_states  # embeddings + one per layer, each [N, cls + P, d]
        features = torch.cat([hidden[layer] for layer in self.select_layers], dim=-1)
        if self.select_feature == "patch":
            features = features[:, self.kind.cls_positions :]
        return features

    def load_pretrained_weights(self, path: str) -> None:
        """Copy the weights of a vision (or full image-text) checkpoint of the tower's family into
        the tower; every tensor must have the shape the model's `vision_config` gives it."""
        source = self.kind.model_cls.from_pretrained(resolve_location(path, "vision tower"), dtype=self.dtype)
        mine, theirs = self.vision_tower.config, source.config
        if theirs.model_type != mine.model_type:
            raise ValueError(
                f"vision tower checkpoint {path} is a {theirs.model_type}, but the model's vision_config "
                f"is a {mine.model_type}"
            )
        for field in ("hidden_size", "num_hidden_layers", "patch_size", "image_size"):
            if getattr(mine, field) != getattr(theirs, field):
                raise ValueError(
                    f"vision tower checkpoint {path} has {field}={getattr(theirs, field)}, "
                    f"but the model's vision_config says {getattr(mine, field)}"
                )
        # Under DeepSpeed ZeRO-3 both models are partitioned: gather them for the copy, or the
        # partitions would silently keep their random initialisation.
        params = [p for p in (*self.vision_tower.parameters(), *source.parameters()) if hasattr(p, "ds_id")]
        gathered = contextlib.nullcontext()
        if params:
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters(params, modifier_rank=0)
        with gathered:
            mine_state = self.vision_tower.state_dict()
            for key, value in source.state_dict().items():
                if key in mine_state and mine_state[key].shape != value.shape:
                    raise ValueError(
                        f"vision tower checkpoint {path}: {key} has shape {tuple(value.shape)}, but the "
                        f"model's vision_config gives it {tuple(mine_state[key].shape)}"
                    )
            self.vision_tower.load_state_dict(source.state_dict())


def load_image_processor(path: str):
    """The tower's own image processor (CLIP's or SigLIP's, with its normalisation; the PIL
    backend when torchvision is absent)."""
    return AutoImageProcessor.from_pretrained(resolve_location(path, "image processor"))
