"""The OpenCLIP vision tower and image processor: open_clip_torch's own modules and transform
behind what `llava.model.vision_tower.VisionTower` uses of the transformers towers (`config`,
`dtype`, `forward(pixels, output_hidden_states=True).hidden_states`, `from_pretrained`).

Hidden states are counted as transformers counts CLIP's (`CLIPVisionTransformer`: the embeddings
after `pre_layrnorm`, then one per encoder layer;
https://github.com/huggingface/transformers/blob/main/src/transformers/models/clip/modeling_clip.py):
index 0 is what enters open_clip's first residual block, the patch embeddings with the class
token and positions added, after `ln_pre` (an identity in `no_ln_pre` towers; open_clip's
`VisionTransformer._embeds`,
https://github.com/mlfoundations/open_clip/blob/main/src/open_clip/transformer.py), and index i
the output of `visual.transformer.resblocks[i - 1]`. So `mm_vision_select_layer` -1 is the last
block's output and -2 the penultimate's, for an OpenCLIP tower as for CLIP. Position 0 is
open_clip's class token (every open_clip ViT has one); `patch` drops it.

The state-dict keys are open_clip's `visual.*` under the tower's
(`model.vision_tower.vision_tower.visual.conv1.weight`, ...). open_clip is imported when a tower
or processor is built, so the rest of the code runs without it.
"""

from __future__ import annotations

import copy
from typing import TypedDict

import torch
from torch import nn
from transformers import BatchFeature
from transformers.image_processing_base import ImageProcessingMixin
from transformers.modeling_outputs import BaseModelOutput

from llava.model.open_clip_config import (
    OPEN_CLIP_WEIGHTS,
    OpenClipVisionConfig,
    check_preprocess_cfg,
    import_open_clip,
    parse_open_clip_location,
    read_open_clip_config,
)


class OpenClipVisionModel(nn.Module):
    """open_clip's `VisionTransformer` (`visual`), built by open_clip from the config."""

    def __init__(self, config: OpenClipVisionConfig):
        super().__init__()
        import_open_clip("an OpenCLIP vision tower")
        # What open_clip's CLIP, CustomTextCLIP and CoCa build their `visual` with (open_clip 3.3,
        # the range pyproject.toml pins); the text tower is never built.
        from open_clip.model import _build_vision_tower

        self.config = config
        cfg = config.model_cfg
        self.visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], cfg.get("quick_gelu", False))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = True) -> BaseModelOutput:
        """`[N, 3, S, S]` pixels -> the hidden states (see the module docstring), each `[N, 1 + P, d]`."""
        if not output_hidden_states:
            raise ValueError("the OpenCLIP tower gives its hidden states (output_hidden_states=True)")
        side = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (side, side):
            raise ValueError(
                f"the OpenCLIP tower takes {side} x {side} images, got {tuple(pixel_values.shape)}"
            )
        embeds = self.visual._embeds(pixel_values)  # [N, 1 + P, d], after ln_pre
        last, blocks = self.visual.transformer.forward_intermediates(embeds)  # every block's output
        return BaseModelOutput(last_hidden_state=last, hidden_states=(embeds, *blocks))

    @classmethod
    def from_pretrained(cls, location: str, dtype: torch.dtype | None = None) -> OpenClipVisionModel:
        """The tower of an OpenCLIP location (`llava.model.open_clip_config`), its weights read by
        `open_clip.create_model` (which checks every key and shape of its full model)."""
        where = parse_open_clip_location(location)
        config = read_open_clip_config(location)
        if where.folder is not None and not any(
            (where.folder / name).is_file() for name in OPEN_CLIP_WEIGHTS
        ):
            raise FileNotFoundError(
                f"vision tower {location}: {where.folder} holds no weights ({' or '.join(OPEN_CLIP_WEIGHTS)})"
            )
        open_clip = import_open_clip(f"the OpenCLIP vision tower {location}")
        try:
            full = open_clip.create_model(
                where.model_name, pretrained=where.pretrained, require_pretrained=True
            )
        except RuntimeError as error:
            raise RuntimeError(f"vision tower {location}: {error}") from error
        model = cls(config)
        model.visual.load_state_dict(full.visual.state_dict())
        return model if dtype is None else model.to(dtype)


class _ProcessorFields(TypedDict, total=False):
    preprocess_cfg: dict


class OpenClipImageProcessor(ImageProcessingMixin):
    """open_clip's evaluation transform (`open_clip.image_transform_v2(preprocess_cfg,
    is_train=False)`: its resize, crop, `ToTensor` and normalisation), with what
    `llava.mm_utils.process_images` reads (`image_mean` for `pad`'s fill colour, `size`)."""

    model_input_names = ["pixel_values"]
    valid_kwargs = _ProcessorFields  # what `from_dict` reads from a saved preprocessor_config.json

    def __init__(self, preprocess_cfg: dict, **kwargs):
        kind = kwargs.pop("image_processor_type", type(self).__name__)
        if kind != type(self).__name__ or kwargs:
            raise ValueError(
                f"{type(self).__name__}: unexpected fields {sorted(kwargs) or [kind]} (it holds preprocess_cfg only)"
            )
        super().__init__()
        self._side = check_preprocess_cfg(preprocess_cfg)
        self.preprocess_cfg = copy.deepcopy(preprocess_cfg)
        self._transform = None

    @classmethod
    def from_location(cls, location: str) -> OpenClipImageProcessor:
        """The processor of an OpenCLIP tower location (its `preprocess_cfg`)."""
        return cls(read_open_clip_config(location).preprocess_cfg)

    @property
    def image_mean(self) -> list[float]:
        return list(self.preprocess_cfg["mean"])

    @property
    def image_std(self) -> list[float]:
        return list(self.preprocess_cfg["std"])

    @property
    def size(self) -> dict[str, int]:
        return {"height": self._side, "width": self._side}

    def to_dict(self) -> dict:
        return {
            "image_processor_type": type(self).__name__,
            "preprocess_cfg": copy.deepcopy(self.preprocess_cfg),
        }

    def __call__(self, images, return_tensors: str = "pt") -> BatchFeature:
        """PIL images -> `{"pixel_values": [N, 3, S, S]}`."""
        if return_tensors != "pt":
            raise ValueError(
                f"{type(self).__name__} returns torch tensors (return_tensors='pt'), got {return_tensors!r}"
            )
        if self._transform is None:
            open_clip = import_open_clip("an OpenCLIP image processor")
            from open_clip.transform import PreprocessCfg

            cfg = {**self.preprocess_cfg, "size": (self._side, self._side)}
            self._transform = open_clip.transform.image_transform_v2(PreprocessCfg(**cfg), is_train=False)
        images = images if isinstance(images, (list, tuple)) else [images]
        return BatchFeature({"pixel_values": torch.stack([self._transform(image) for image in images])})
