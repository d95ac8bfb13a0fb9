"""Causal attention within each sample of one packed row, as flash-attention's varlen path
computes it, on any device: the reference the padding-free tests hold the packed row's
flash-attention conventions to, and the cost model of `--padding_free True` with
`flash_attention_2` in `llava.bench.padding_free`.

Importing this module registers it with transformers' attention interface under `PER_SAMPLE`
(with flash-attention's mask function: none for a packed row), so a model runs it with
`model.set_attn_implementation(PER_SAMPLE)`. It is not a training path: flash-attention is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

PER_SAMPLE = "per_sample_attention"


def per_sample_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Causal attention within each sample of one packed row, as flash-attention's varlen path
    computes it: the samples' bounds (`cu_seqlens`) from transformers'
    `prepare_fa_kwargs_from_position_ids`, then SDPA on each sample's block. query: `[1, H, S, hd]`;
    key, value: `[1, H_kv, S, hd]`; returns `[1, S, H, hd]`. Non-causal attention (the vision
    tower's) is plain SDPA."""
    if not module.is_causal:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    if attention_mask is not None or kwargs.get("position_ids") is None:
        raise ValueError(f"{PER_SAMPLE} takes one packed row: position_ids and no attention mask")
    (cu_seqlens, _), _ = prepare_fa_kwargs_from_position_ids(kwargs["position_ids"])
    bounds = cu_seqlens.tolist()
    blocks = [
        F.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling, enable_gqa=True
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]  # each [1, H, L_i, hd]
    return torch.cat(blocks, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PER_SAMPLE, per_sample_attention)
AttentionMaskInterface.register(PER_SAMPLE, flash_attention_mask)  # flash-attention's: none for a packed row
