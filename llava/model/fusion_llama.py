"""Inverse-LLaVA's language model: Llama with fusion layers and a frozen vision tower."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM, LlamaModel, PreTrainedModel

from llava.model.configuration import FusionLlamaConfig
from llava.model.fusion import FusionBranch, FusionLlamaAttention
from llava.model.multimodal import MultimodalGenerationMixin
from llava.model.release_fusion import ReleaseLinear, ReleaseMLPTarget, ReleaseStableTarget
from llava.model.vision_tower import CLIPVisionTower


class FusionLlamaModel(LlamaModel):
    """`LlamaModel` whose layers in `config.fusion_layer_ids` use `FusionLlamaAttention`.

    The vision stream reaches those layers as forward keyword arguments (`vision_stream`,
    `image_mask`), which `LlamaModel.forward` hands to every layer.
    """

    config_class = FusionLlamaConfig

    def __init__(self, config: FusionLlamaConfig):
        super().__init__(config)
        for layer_id in config.fusion_layer_ids:
            self.layers[layer_id].self_attn = FusionLlamaAttention(config, layer_id)
        self.vision_tower = CLIPVisionTower(
            config.vision_config, config.mm_vision_select_layer, config.mm_vision_select_feature
        )

    def _init_weights(self, module):
        """The library's initialisation, plus the fusion layers' own (the paper's branch: zero
        output and alpha; the release's layers: theirs, PyTorch's default for its Linears)."""
        if isinstance(module, (FusionBranch, ReleaseLinear, ReleaseMLPTarget, ReleaseStableTarget)):
            module.reset_parameters()
        else:
            PreTrainedModel._init_weights(self, module)


class FusionLlamaForCausalLM(MultimodalGenerationMixin, LlamaForCausalLM):
    """Inverse-LLaVA (arXiv 2508.12466): no projector; image positions enter as zero embeddings
    and the vision features are injected into the q/k/v projections of the fusion layers."""

    config_class = FusionLlamaConfig
    _uses_vision_stream = True
    # The tower's weights come from their own checkpoint (see llava.model.builder).
    _keys_to_ignore_on_load_missing = [r"^model\.vision_tower\."]

    def __init__(self, config: FusionLlamaConfig):
        super().__init__(config)
        self.model = FusionLlamaModel(config)
        self.post_init()

    _init_weights = FusionLlamaModel._init_weights

    def _image_position_embeds(self, features: torch.Tensor) -> None:
        return None  # H_0 = 0 at image positions

    def fusion_branches(self) -> dict[int, torch.nn.Module]:
        return {i: self.model.layers[i].self_attn.fusion for i in self.config.fusion_layer_ids}

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor | None = None,
        vision_stream: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """Hand the vision stream to the positions this step computes: at prefill the whole
        prompt; with the KV cache, decode steps are text-only and get none; without the cache
        every step recomputes the prompt and gets it again. Every other input is the library's."""
        inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        if image_mask is None:
            return inputs
        step = inputs["inputs_embeds"] if inputs.get("inputs_embeds") is not None else inputs["input_ids"]
        # transformers >= 5.24 names the KV cache `cache`; earlier 5.x `past_key_values`.
        cache = inputs.get("cache", inputs.get("past_key_values"))
        start = cache.get_seq_length() if cache is not None else 0
        stop = start + step.shape[1]
        window = image_mask[:, start:stop]
        if window.any():
            pad = stop - start - window.shape[1]
            inputs["image_mask"] = torch.nn.functional.pad(window, (0, pad), value=False)
            inputs["vision_stream"] = torch.nn.functional.pad(vision_stream[:, start:stop], (0, 0, 0, pad))
        return inputs
