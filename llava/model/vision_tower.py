"""The frozen CLIP-style vision tower."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import AutoImageProcessor, CLIPVisionConfig, CLIPVisionModel

from llava.model.paths import resolve_location


class CLIPVisionTower(nn.Module):
    """Wraps `CLIPVisionModel`; returns the selected hidden states as `[N, P, d_v]`.

    Several selected layers are concatenated on the feature axis (d_v = hidden x layers); the
    CLS position is dropped for `patch`. The tower is frozen: it runs without gradients.
    State-dict keys are `vision_tower.vision_model.*`, as in LLaVA's checkpoints.
    """

    def __init__(
        self, vision_config: CLIPVisionConfig, select_layers: list[int], select_feature: str = "patch"
    ):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(
                f"unknown mm_vision_select_feature {select_feature!r}; expected patch or cls_patch"
            )
        self.vision_tower = CLIPVisionModel(vision_config)
        self.vision_tower.requires_grad_(False)
        self.select_layers = list(select_layers)
        self.select_feature = select_feature

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size * len(self.select_layers)

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values: [N, 3, H, W] -> features [N, P, d_v]
        outputs = self.vision_tower(pixel_values.to(self.dtype), output_hidden_states=True)
        hidden = outputs.hidden_states  # embeddings + one per layer, each [N, 1 + P, d]
        features = torch.cat([hidden[layer] for layer in self.select_layers], dim=-1)
        if self.select_feature == "patch":
            features = features[:, 1:]
        return features

    def load_pretrained_weights(self, path: str) -> None:
        """Copy the weights of a CLIP vision (or full CLIP) checkpoint into the tower; every
        tensor must have the shape the model's `vision_config` gives it."""
        source = CLIPVisionModel.from_pretrained(resolve_location(path, "vision tower"), dtype=self.dtype)
        mine, theirs = self.vision_tower.config, source.config
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
    """The tower's image processor (a CLIP processor; the PIL backend when torchvision is absent)."""
    return AutoImageProcessor.from_pretrained(resolve_location(path, "image processor"))
