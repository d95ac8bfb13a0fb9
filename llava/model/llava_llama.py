"""The LLaVA-1.5 baseline: a projector maps vision features into the token-embedding space."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM, LlamaModel

from llava.model.configuration import LlavaLlamaConfig
from llava.model.multimodal import MultimodalGenerationMixin
from llava.model.projector import build_projector
from llava.model.vision_tower import CLIPVisionTower


class LlavaLlamaModel(LlamaModel):
    """`LlamaModel` plus the vision tower and `mm_projector` (LLaVA's state-dict layout)."""

    config_class = LlavaLlamaConfig

    def __init__(self, config: LlavaLlamaConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionTower(
            config.vision_config, config.mm_vision_select_layer, config.mm_vision_select_feature
        )
        self.mm_projector = build_projector(
            config.mm_projector_type, config.mm_hidden_size, config.hidden_size
        )


class LlavaLlamaForCausalLM(MultimodalGenerationMixin, LlamaForCausalLM):
    """LLaVA-1.5 (Liu et al., 2023): projector outputs at the image positions."""

    config_class = LlavaLlamaConfig
    # The tower's weights come from their own checkpoint (see llava.model.builder).
    _keys_to_ignore_on_load_missing = [r"^model\.vision_tower\."]

    def __init__(self, config: LlavaLlamaConfig):
        super().__init__(config)
        self.model = LlavaLlamaModel(config)
        self.post_init()

    def _image_position_embeds(self, features: torch.Tensor) -> torch.Tensor:
        projector = self.model.mm_projector
        return projector(features.to(self.dtype))  # [N, P, d_v] -> [N, P, d_h]
