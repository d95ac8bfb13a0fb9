"""The frozen vision tower: CLIP, SigLIP (SigLIP 2's fixed-resolution checkpoints are SigLIP) or
an OpenCLIP ViT, chosen from the tower's config (`model_type`), never from its name.

| tower config `model_type` | library model | CLS position | patches |
|---|---|---|---|
| `clip_vision_model` (or a full `clip` config) | `CLIPVisionModel` | 1, first | (image_size / patch_size)^2 |
| `siglip_vision_model` (or a full `siglip` config) | `SiglipVisionModel` | none | (image_size / patch_size)^2 |
| `siglip2_vision_model` (or a full `siglip2` config) | `Siglip2VisionModel` | none | `num_patches`, as a square grid |
| `open_clip_vision_model` (`llava.model.open_clip_config`) | open_clip's `VisionTransformer` | 1, first | (image_size / patch_size)^2 |

SigLIP has no CLS token, so `patch` keeps every position and `cls_patch` is refused. SigLIP 2's
fixed-resolution checkpoints (`google/siglip2-so400m-patch14-384`, ...) ship `siglip` configs and
load as SigLIP. Its NaFlex checkpoints (`siglip2_vision_model`, `google/siglip2-base-patch16-naflex`)
run here at one fixed resolution: a square grid of `num_patches` patches (16 x 16 for 256), side
`sqrt(num_patches) * patch_size` pixels. The tower cuts the `[N, 3, H, W]` pixels into patches in
the NaFlex processor's order, with every patch valid and the grid as `spatial_shapes`; the image
processor is a fixed-size SigLIP one with the NaFlex processor's normalisation
(`load_image_processor`). On a square image (as `pad` and `resize` make every image) this is
exactly what the NaFlex processor gives; NaFlex's variable aspect ratios and resolutions are not
supported.

OpenCLIP towers are built and loaded by open_clip_torch itself (the `openclip` extra), from the
locations `local-dir:<folder>`, `hf-hub:<org>/<name>` and `open_clip:<model>,<pretrained>`
(`llava.model.open_clip_config`), with open_clip's own preprocessing (`OpenClipImageProcessor`);
their hidden states count as CLIP's (`llava.model.open_clip_tower`). Their first position is
open_clip's class token; `cls_patch` is refused for towers that pool something else (average
pooling, an attentional pooler). A folder holding only `open_clip_config.json` given without
`local-dir:` is refused with that advice.

The state-dict keys are the library model's own under `vision_tower.`; for CLIP the same as before,
so LLaVA's checkpoints load unchanged.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from llava.model.open_clip_config import (
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_MODEL_TYPE,
    OpenClipVisionConfig,
    cls_refusal,
    is_open_clip_location,
    read_open_clip_config,
)
from llava.model.open_clip_tower import OpenClipImageProcessor, OpenClipVisionModel
from llava.model.paths import resolve_location

VISION_SELECT_FEATURES = ("patch", "cls_patch")


def _no_refusal(vision_config: PretrainedConfig) -> None:
    return None


@dataclass(frozen=True)
class TowerKind:
    """A vision tower family: its config and model classes, how many CLS positions it puts before
    the patches, and (`cls_refusal`) why a tower's CLS position would not be a CLS summary."""

    name: str
    config_cls: type
    model_cls: type
    cls_positions: int
    cls_refusal: Callable[[PretrainedConfig], str | None] = _no_refusal


TOWERS: dict[str, TowerKind] = {
    "clip_vision_model": TowerKind("CLIP", CLIPVisionConfig, CLIPVisionModel, cls_positions=1),
    "siglip_vision_model": TowerKind("SigLIP", SiglipVisionConfig, SiglipVisionModel, cls_positions=0),
    "siglip2_vision_model": TowerKind(
        "SigLIP 2 NaFlex", Siglip2VisionConfig, Siglip2VisionModel, cls_positions=0
    ),
    OPEN_CLIP_MODEL_TYPE: TowerKind(
        "OpenCLIP", OpenClipVisionConfig, OpenClipVisionModel, cls_positions=1, cls_refusal=cls_refusal
    ),
}
# A full (image + text) checkpoint's model_type -> its vision model's.
_FULL_MODEL_TYPES = {
    "clip": "clip_vision_model",
    "siglip": "siglip_vision_model",
    "siglip2": "siglip2_vision_model",
}
_NAFLEX = "siglip2_vision_model"


def tower_kind(vision_config: PretrainedConfig) -> TowerKind:
    """The tower family of a vision config (an unknown `model_type` is an error naming it)."""
    model_type = vision_config.model_type
    if model_type not in TOWERS:
        raise ValueError(
            f"vision tower model_type {model_type!r} is not supported; supported: {sorted(TOWERS)} "
            "(CLIP, SigLIP, including SigLIP 2's fixed-resolution checkpoints, and OpenCLIP ViTs)"
        )
    return TOWERS[model_type]


def grid_side(vision_config: PretrainedConfig) -> int:
    """Patches per side of the square grid an image becomes (24 for CLIP-L/14 at 336 px)."""
    if vision_config.model_type != _NAFLEX:
        return vision_config.image_size // vision_config.patch_size
    side = math.isqrt(vision_config.num_patches)
    if side * side != vision_config.num_patches:
        raise ValueError(
            f"a SigLIP 2 NaFlex tower runs here on a square grid, and num_patches={vision_config.num_patches} "
            "is not a square"
        )
    return side


def tower_image_size(vision_config: PretrainedConfig) -> int:
    """The side in pixels of the square images the tower takes."""
    return grid_side(vision_config) * vision_config.patch_size


def num_tower_patches(vision_config: PretrainedConfig) -> int:
    """Patch positions of one image (576 for CLIP-L/14 at 336 px, 729 for SigLIP-so400m/14 at 384)."""
    return grid_side(vision_config) ** 2


def to_naflex_patches(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`[N, C, H, W]` -> `[N, (H/p)(W/p), p*p*C]`, patches row by row, each patch's pixels row by
    row with the channels last: the order of transformers' `Siglip2ImageProcessor`."""
    n, c, h, w = pixel_values.shape
    grid = pixel_values.reshape(n, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch_size) * (w // patch_size), -1)


def check_select_feature(vision_config: PretrainedConfig, select_feature: str) -> None:
    """`patch` drops the CLS position (if any); `cls_patch` keeps it and needs a tower that has one."""
    if select_feature not in VISION_SELECT_FEATURES:
        raise ValueError(
            f"unknown mm_vision_select_feature {select_feature!r}; expected one of {list(VISION_SELECT_FEATURES)}"
        )
    kind = tower_kind(vision_config)
    if select_feature != "cls_patch":
        return
    if kind.cls_positions == 0:
        raise ValueError(
            f"mm_vision_select_feature='cls_patch' needs a CLS token, and a {kind.name} tower has none "
            "(use patch)"
        )
    reason = kind.cls_refusal(vision_config)
    if reason is not None:
        raise ValueError(
            f"mm_vision_select_feature='cls_patch' needs a CLS token, and this {kind.name} tower's {reason} "
            "(use patch)"
        )


def _refuse_bare_open_clip_folder(location: str, resolved: str) -> None:
    """A folder holding open_clip's files only, given without `local-dir:`: say how to name it."""
    if (Path(resolved) / OPEN_CLIP_CONFIG).exists() and not (Path(resolved) / "config.json").exists():
        raise ValueError(
            f"vision tower {location} is in OpenCLIP's format ({OPEN_CLIP_CONFIG}, no config.json): "
            f"name it local-dir:{location} to load it with open_clip"
        )


def read_vision_config(location: str) -> PretrainedConfig:
    """The vision config of a tower checkpoint (a vision-only or a full image-text one), by the
    `model_type` its config.json states; of an OpenCLIP location, from open_clip's config."""
    if is_open_clip_location(location):
        return read_open_clip_config(location)
    resolved = resolve_location(location, "vision tower")
    _refuse_bare_open_clip_folder(location, resolved)
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
    CLS position (CLIP, OpenCLIP) is dropped for `patch`. The tower is frozen: it runs without gradients.
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
        pixel_values = pixel_values.to(self.dtype)
        if self.config.model_type == _NAFLEX:
            outputs = self._naflex_forward(pixel_values)
        else:
            outputs = self.vision_tower(pixel_values, output_hidden_states=True)
        hidden = outputs.hidden_states  # embeddings + one per layer, each [N, cls + P, d]
        features = torch.cat([hidden[layer] for layer in self.select_layers], dim=-1)
        if self.select_feature == "patch":
            features = features[:, self.kind.cls_positions :]
        return features

    def _naflex_forward(self, pixel_values: torch.Tensor):
        """SigLIP 2 NaFlex on the fixed square grid: every patch valid."""
        n, _, h, w = pixel_values.shape
        side, patch = grid_side(self.config), self.config.patch_size
        if (h, w) != (side * patch, side * patch):
            raise ValueError(
                f"the SigLIP 2 NaFlex tower takes {side * patch} x {side * patch} images here, got {h} x {w}"
            )
        patches = to_naflex_patches(pixel_values, patch)  # [N, P, p*p*3]
        mask = torch.ones(n, side * side, dtype=torch.long, device=pixel_values.device)
        shapes = torch.tensor([[side, side]] * n, dtype=torch.long, device=pixel_values.device)
        return self.vision_tower(
            pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes, output_hidden_states=True
        )

    def _source_tower(self, path: str):
        """The tower of the checkpoint at `path`, as its library loads it."""
        if is_open_clip_location(path):
            return OpenClipVisionModel.from_pretrained(path, dtype=self.dtype)
        if self.kind.model_cls is OpenClipVisionModel:
            raise ValueError(
                f"vision tower checkpoint {path} is not an OpenCLIP location (local-dir:, hf-hub:, open_clip:), "
                "but the model's vision_config is an OpenCLIP one"
            )
        return self.kind.model_cls.from_pretrained(resolve_location(path, "vision tower"), dtype=self.dtype)

    def load_pretrained_weights(self, path: str) -> None:
        """Copy the weights of a vision (or full image-text) checkpoint of the tower's family into
        the tower; every tensor must have the shape the model's `vision_config` gives it (an
        OpenCLIP tower: the same `model_cfg`)."""
        source = self._source_tower(path)
        mine, theirs = self.vision_tower.config, source.config
        if theirs.model_type != mine.model_type:
            raise ValueError(
                f"vision tower checkpoint {path} is a {theirs.model_type}, but the model's vision_config "
                f"is a {mine.model_type}"
            )
        if mine.model_type == OPEN_CLIP_MODEL_TYPE and mine.model_cfg != theirs.model_cfg:
            raise ValueError(
                f"vision tower checkpoint {path} has the OpenCLIP model_cfg {theirs.model_cfg}, but the "
                f"model's vision_config says {mine.model_cfg}"
            )
        size_field = "num_patches" if mine.model_type == _NAFLEX else "image_size"
        for field in ("hidden_size", "num_hidden_layers", "patch_size", size_field):
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
    backend when torchvision is absent, torchvision's otherwise). For a SigLIP 2 NaFlex tower: a fixed-size SigLIP
    processor at the tower's square resolution with the NaFlex processor's resampling and
    normalisation (see the module docstring). For an OpenCLIP location, or a folder an
    `OpenClipImageProcessor` was saved to: open_clip's transform (`OpenClipImageProcessor`)."""
    if is_open_clip_location(path):
        return OpenClipImageProcessor.from_location(path)
    resolved = resolve_location(path, "image processor")
    _refuse_bare_open_clip_folder(path, resolved)
    saved = Path(resolved) / "preprocessor_config.json"
    if (
        saved.is_file()
        and json.loads(saved.read_text()).get("image_processor_type") == OpenClipImageProcessor.__name__
    ):
        return OpenClipImageProcessor.from_pretrained(resolved)
    processor = AutoImageProcessor.from_pretrained(resolved)
    if not type(processor).__name__.startswith("Siglip2ImageProcessor"):
        return processor
    side = math.isqrt(processor.max_num_patches) * processor.patch_size
    if (side // processor.patch_size) ** 2 != processor.max_num_patches:
        raise ValueError(
            f"{path}: the NaFlex processor's max_num_patches={processor.max_num_patches} is not a square grid"
        )
    # The backend AutoImageProcessor picked for the NaFlex processor (torchvision when installed,
    # else PIL): the tower's images are resized the same way whichever processor class loads them.
    backend = SiglipImageProcessorPil
    if not type(processor).__name__.endswith("Pil"):
        from transformers import SiglipImageProcessor as backend  # needs torchvision, which is there
    return backend(
        size={"height": side, "width": side},
        resample=processor.resample,
        do_rescale=processor.do_rescale,
        rescale_factor=processor.rescale_factor,
        do_normalize=processor.do_normalize,
        image_mean=processor.image_mean,
        image_std=processor.image_std,
    )
