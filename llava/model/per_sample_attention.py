"""Causal attention within each sample of one packed row: what `--padding_free True` runs when
flash-attention is not in use (on a CPU, or on a GPU without flash-attn).

A packed row (`llava.data.packing.PaddingFreeCollator`: one row, no attention mask, positions
restarting at 0 for every sample) is cut where transformers' flash-attention path cuts it
(`prepare_fa_kwargs_from_position_ids`: `cu_seqlens` from the positions), and each sample attends
within its own causal block (and the family's sliding window), as flash-attention's varlen kernel
computes it. The kernel: on CUDA in bf16/fp16, PyTorch's own varlen flash-attention
(`torch.nn.attention.varlen.varlen_attn`, one call for the row); elsewhere SDPA on each sample's
block, which computes `sum L_i^2` scores instead of the whole row's `S^2` that SDPA with
transformers' packed-sequence mask computes. (FlexAttention, the other per-document kernel, has
no backward pass on a CPU in torch 2.13, so it cannot train there.)

Anything that is not a packed row (a padded batch, a decode step against the KV cache, the vision
tower's bidirectional attention) goes to the library's SDPA with SDPA's own mask, so a model set
to this implementation still evaluates and generates as under `sdpa`.

Importing this module registers it with transformers' attention interface under `PER_SAMPLE`,
with its mask function, so `attn_implementation=PER_SAMPLE` selects it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.varlen import varlen_attn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

PER_SAMPLE = "per_sample_attention"
FLASH_PREFIX = "flash_attention"
HALF_DTYPES = (torch.bfloat16, torch.float16)


def padding_free_attention(attn_implementation: str) -> str:
    """The attention `--padding_free True` runs instead of `attn_implementation`: flash-attention
    keeps its own varlen path; SDPA (the default off flash-attention) becomes `PER_SAMPLE`, the
    same kernel per sample; eager, asked for by name, stays eager (the whole row, masked)."""
    return PER_SAMPLE if attn_implementation == "sdpa" else attn_implementation


def packed_row_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """No mask for a row without padding whose queries are its keys (the samples' blocks come
    from the positions, as flash-attention's mask function does); SDPA's mask otherwise."""
    if attention_mask is None and batch_size == 1 and q_length == kv_length and q_offset == kv_offset == 0:
        return None
    return sdpa_mask(
        batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask, **kwargs
    )


def sample_bounds(position_ids: torch.Tensor) -> list[int]:
    """`[0, L_0, L_0 + L_1, ..., S]` of a packed row's positions `[1, S]`, cut as transformers
    cuts it for flash-attention."""
    (cu_seqlens, _), _ = prepare_fa_kwargs_from_position_ids(position_ids)
    return cu_seqlens.tolist()


def window_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """Causal attention within a sliding window of `window` positions (each query sees itself and
    the `window - 1` before it, the library's convention): `[length, length]` bool."""
    offsets = torch.arange(length, device=device)
    distance = offsets[:, None] - offsets[None, :]  # query - key
    return (distance >= 0) & (distance < window)


def blockwise_sdpa(query, key, value, bounds, scaling, dropout, window) -> torch.Tensor:
    """SDPA on each sample's block: `[1, H, S, hd]` -> `[1, H, S, hd]`. The row is split once per
    tensor (whose backward concatenates the blocks' gradients), not sliced per block (whose
    backward would add a whole-row gradient per block)."""
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    blocks = []
    for q, k, v in zip(*(t.split(lengths, dim=2) for t in (query, key, value)), strict=True):
        length = q.shape[2]  # q, k, v: [1, H, L_i, hd]
        windowed = window is not None and length > window
        blocks.append(
            F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=window_mask(length, window, q.device) if windowed else None,
                is_causal=not windowed,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=True,
            )
        )
    return torch.cat(blocks, dim=2)


def varlen_flash(query, key, value, bounds, scaling, window) -> torch.Tensor:
    """PyTorch's varlen flash-attention over the row (CUDA, bf16/fp16): `[1, H, S, hd]` -> `[1, H, S, hd]`."""
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32, device=query.device)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    out = varlen_attn(
        query[0].transpose(0, 1),  # [S, H, hd]
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seqlens,
        cu_seqlens,
        longest,
        longest,
        scale=scaling,
        window_size=(-1, 0) if window is None else (window - 1, 0),
        enable_gqa=True,
    )  # [S, H, hd]
    return out.transpose(0, 1).unsqueeze(0)


def per_sample_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each sample of one packed row. query: `[1, H, S, hd]`; key, value:
    `[1, H_kv, S, hd]`; returns `[1, S, H, hd]`. Anything else is `sdpa_attention_forward`."""
    position_ids = kwargs.get("position_ids")
    packed = (
        module.is_causal
        and attention_mask is None
        and position_ids is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2]
    )
    if not packed:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            sliding_window=sliding_window,
            **kwargs,
        )
    if kwargs.get("softcap") is not None:
        raise ValueError(f"{PER_SAMPLE} has no attention-logit softcapping; use eager or flash_attention_2")
    bounds = sample_bounds(position_ids)
    if query.is_cuda and query.dtype in HALF_DTYPES and dropout == 0.0:
        out = varlen_flash(query, key, value, bounds, scaling, sliding_window)
    else:
        out = blockwise_sdpa(query, key, value, bounds, scaling, dropout, sliding_window)
    return out.transpose(1, 2).contiguous(), None  # [1, S, H, hd]


AttentionInterface.register(PER_SAMPLE, per_sample_attention)
AttentionMaskInterface.register(PER_SAMPLE, packed_row_mask)
