"""The fusion branch of Inverse-LLaVA and the attention layer that carries it (every family).

Paper (arXiv 2508.12466), Eqs. 3-5, for every target X in the fusion targets:

    X = W_X x + alpha_X * W_concat^X . concat(m_text * (W_t2v x), V_pad)

Because the text mask `m_text` and the padded vision stream `V_pad` are complementary, only one
half of the concatenation is non-zero at any position. Splitting `W_concat^X = [A_X | B_X]` gives
`A_X W_t2v x` at text positions and `B_X v` at image positions; this module computes exactly
that (with the targets' A and B stacked so each half is one matmul) and never builds the
`n x 2 d_v` concatenation. `FusionBranch.reference_forward` keeps the literal formula for tests.

Initialisation: W_concat (and the output layers of the other variants) start at zero, so a
freshly added branch leaves the pre-trained LLM's outputs unchanged; alpha starts at
`fusion_alpha`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from llava.model.compat import pop_kv_cache
from llava.model.configuration import RELEASE_VARIANTS, FusionConfigMixin
from llava.model.families import FAMILIES, Family, publish
from llava.model.fusion_layer import FusionLayer
from llava.model.published_fusion import PublishedFusion
from llava.model.release_fusion import ReleaseFusion


class FusionBranch(FusionLayer):
    """The term added to the q/k/v projections of one attention layer (all variants).

    Args:
        config: the model config (variant, targets, alpha, dropout, sizes).
        out_features: output width of each target projection (q, k, v differ under GQA).
    """

    def __init__(self, config: FusionConfigMixin, out_features: dict[str, int]):
        super().__init__()
        d_h, d_v = config.hidden_size, config.mm_hidden_size
        self.variant = config.fusion_variant
        self.targets = list(config.fusion_targets)
        self.split_sizes = [out_features[t] for t in self.targets]
        total = sum(self.split_sizes)
        n_targets = len(self.targets)
        self.initializer_range = config.initializer_range
        self.initial_alpha = config.fusion_alpha

        self.alpha = nn.Parameter(torch.empty(n_targets))  # one scale per target
        self.dropout = nn.Dropout(config.fusion_dropout)
        self.vision_norm = LlamaRMSNorm(d_v, eps=config.rms_norm_eps) if config.vision_stream_norm else None
        if self.variant == "mlp":
            hidden = config.fusion_hidden_dim or d_h
            self.mlp_hidden = hidden
            self.mlp_in_weight = nn.Parameter(torch.empty(n_targets * hidden, d_v))  # stacked first layers
            self.mlp_in_bias = nn.Parameter(torch.empty(n_targets * hidden))
            self.mlp_out_weight = nn.Parameter(
                torch.empty(total, hidden)
            )  # row block t acts on hidden block t
            self.mlp_out_bias = nn.Parameter(torch.empty(total))
        else:
            self.text_to_vision = nn.Parameter(torch.empty(d_v, d_h))  # W_t2v, shared by the targets
            if self.variant == "add":
                self.shared_proj = nn.Parameter(torch.empty(total, d_v))  # W^X stacked over targets
            else:
                self.text_proj = nn.Parameter(torch.empty(total, d_v))  # A_X stacked: W_concat^X[:, :d_v]
                self.vision_proj = nn.Parameter(torch.empty(total, d_v))  # B_X stacked: W_concat^X[:, d_v:]
            if self.variant == "gated":
                self.gate_text = nn.Parameter(torch.empty(n_targets, d_v))
                self.gate_vision = nn.Parameter(torch.empty(n_targets, d_v))
                self.gate_bias = nn.Parameter(torch.empty(n_targets))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the branch (parameters already loaded from a checkpoint are left alone)."""
        init.constant_(self.alpha, self.initial_alpha)
        if self.vision_norm is not None:
            init.ones_(self.vision_norm.weight)
        for name, param in self.named_parameters(recurse=False):
            if name in ("text_to_vision", "mlp_in_weight"):
                init.normal_(param, mean=0.0, std=self.initializer_range)
            elif name != "alpha":
                init.zeros_(param)

    def _text_half(self) -> torch.Tensor:
        return self.shared_proj if self.variant == "add" else self.text_proj

    def _vision_half(self) -> torch.Tensor:
        return self.shared_proj if self.variant == "add" else self.vision_proj

    def _prepare_vision(self, vision: torch.Tensor) -> torch.Tensor:
        if self.vision_norm is not None:
            vision = self.vision_norm(vision)
        return vision

    def _mlp(self, vision: torch.Tensor) -> torch.Tensor:
        # vision: [N, d_v] -> [N, total]
        hidden = F.gelu(F.linear(vision, self.mlp_in_weight, self.mlp_in_bias))  # [N, n_targets * hidden]
        blocks = hidden.split(self.mlp_hidden, dim=-1)
        weights = self.mlp_out_weight.split(self.split_sizes, dim=0)
        biases = self.mlp_out_bias.split(self.split_sizes, dim=0)
        return torch.cat([F.linear(h, w, b) for h, w, b in zip(blocks, weights, biases, strict=True)], dim=-1)

    def _scale(self, term: torch.Tensor, gate_logits: torch.Tensor | None) -> torch.Tensor:
        # term: [N, total]; alpha (and the gate) per target, broadcast over each target's columns
        scale = self.alpha
        if gate_logits is not None:
            scale = scale * torch.sigmoid(gate_logits)  # [N, n_targets]
        repeats = torch.tensor(self.split_sizes, device=term.device)
        return term * torch.repeat_interleave(scale, repeats, dim=-1, output_size=term.shape[-1])

    def text_term(self, x: torch.Tensor) -> torch.Tensor:
        """Fusion term at text positions. x: [N, d_h] -> [N, total]."""
        if self.variant == "mlp":
            zero = x.new_zeros(1, self.mlp_in_weight.shape[1])
            return self._scale(self._mlp(self.dropout(zero)), None).expand(x.shape[0], -1)
        mapped = self.dropout(F.linear(x, self.text_to_vision))  # [N, d_v]: W_t2v x
        gate = F.linear(mapped, self.gate_text, self.gate_bias) if self.variant == "gated" else None
        return self._scale(F.linear(mapped, self._text_half()), gate)

    def vision_term(self, vision: torch.Tensor) -> torch.Tensor:
        """Fusion term at image positions. vision: [N, d_v] -> [N, total]."""
        vision = self.dropout(self._prepare_vision(vision))
        if self.variant == "mlp":
            return self._scale(self._mlp(vision), None)
        gate = F.linear(vision, self.gate_vision, self.gate_bias) if self.variant == "gated" else None
        return self._scale(F.linear(vision, self._vision_half()), gate)

    def _fuse(
        self, flat_x: torch.Tensor, selected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """The split form. flat_x: [B*T, d_h] -> [B*T, total]; in training both halves always run
        (on zero rows when a half is empty)."""
        if selected is None:
            return self.text_term(flat_x)
        rows, text_rows, image_vision = selected  # [N_img], [N_text], [N_img, d_v]
        out = flat_x.new_zeros(flat_x.shape[0], sum(self.split_sizes))  # [B*T, total]
        out = out.index_copy(0, text_rows, self.text_term(flat_x.index_select(0, text_rows)))
        return out.index_copy(0, rows, self.vision_term(image_vision.to(flat_x.dtype)))

    def _vision_width(self) -> int:
        return self.mlp_in_weight.shape[1] if self.variant == "mlp" else self.text_to_vision.shape[0]

    def _reference(
        self, x: torch.Tensor, vision_stream: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """The literal formulas of docs/model.md ("The fusion term") over the full sequence.

        concat: W_concat . concat(m_text * W_t2v x, V_pad); add: W (m_text * W_t2v x + V_pad);
        gated: the concat term times sigmoid(G . concat(...)); mlp: MLP(V_pad).
        """
        text_mask = (~image_mask).unsqueeze(-1).to(x.dtype)  # m_text: [B, T, 1]
        v_pad = self._prepare_vision(vision_stream) * image_mask.unsqueeze(-1).to(x.dtype)  # [B, T, d_v]
        if self.variant == "mlp":
            return self._scale(self._mlp(self.dropout(v_pad)), None)
        mapped = self.dropout(F.linear(x, self.text_to_vision)) * text_mask  # [B, T, d_v]
        v_pad = self.dropout(v_pad)
        if self.variant == "add":
            return self._scale(F.linear(mapped + v_pad, self.shared_proj), None)
        concat = torch.cat([mapped, v_pad], dim=-1)  # [B, T, 2 d_v]
        w_concat = torch.cat([self.text_proj, self.vision_proj], dim=-1)  # [total, 2 d_v]
        gate = None
        if self.variant == "gated":
            gate = F.linear(concat, torch.cat([self.gate_text, self.gate_vision], dim=-1), self.gate_bias)
        return self._scale(F.linear(concat, w_concat), gate)


FUSION_MODULES = (FusionBranch, ReleaseFusion, PublishedFusion)  # what `self_attn.fusion` can be


def build_fusion_branch(
    config: FusionConfigMixin, out_features: dict[str, int]
) -> FusionBranch | ReleaseFusion | PublishedFusion:
    """The paper's branch and its ablations, the public release's layers, or the published
    model's layer (by `fusion_variant`)."""
    if config.fusion_variant in RELEASE_VARIANTS:
        return ReleaseFusion(config, out_features)
    if config.fusion_variant == "published":
        return PublishedFusion(config, out_features)
    return FusionBranch(config, out_features)


class FusionAttentionMixin:
    """The family's attention whose q/k/v projections receive the fusion term.

    Mixed into the family's own attention class (`fusion_attention_class`): the base projections
    (`q_proj`, `k_proj`, `v_proj`, `o_proj`, and Qwen3's `q_norm`/`k_norm`) are the library's
    modules, untouched (their state-dict keys and any LoRA wrapping stay as they are); the branch
    lives in `fusion`. The term is added to the projection outputs, as in the paper (Eq. 3):
    before Qwen3's q/k RMSNorm and before the rotary embedding. Attention itself goes through the
    library's attention interface (eager, SDPA, flash-attention), selected by
    `config._attn_implementation`, with the family's sliding window.
    """

    family: Family  # set on the generated class

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        out_features = {
            "q": config.num_attention_heads * self.head_dim,
            "k": config.num_key_value_heads * self.head_dim,
            "v": config.num_key_value_heads * self.head_dim,
        }
        self.fusion = build_fusion_branch(config, out_features)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        vision_stream: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = pop_kv_cache(kwargs)  # its name depends on the transformers release
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        projections = {
            "q": self.q_proj(hidden_states),
            "k": self.k_proj(hidden_states),
            "v": self.v_proj(hidden_states),
        }  # each [B, T, heads * head_dim]
        deltas = self.fusion(hidden_states, vision_stream, image_mask).split(self.fusion.split_sizes, dim=-1)
        for target, delta in zip(self.fusion.targets, deltas, strict=True):
            projections[target] = projections[target] + delta

        query_states = projections["q"].view(hidden_shape)  # [B, T, H, hd]
        key_states = projections["k"].view(hidden_shape)  # [B, T, H_kv, hd]
        if self.family.qk_norm:
            query_states, key_states = self.q_norm(query_states), self.k_norm(key_states)
        query_states = query_states.transpose(1, 2)  # [B, H, T, hd]
        key_states = key_states.transpose(1, 2)  # [B, H_kv, T, hd]
        value_states = projections["v"].view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = self.family.modeling.apply_rotary_pos_emb(
            query_states, key_states, cos, sin
        )
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, self.family.modeling.eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.family.sliding_window(self),
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


@cache
def fusion_attention_class(family_model_type: str) -> type:
    """`Fusion<Family>Attention(FusionAttentionMixin, <Family>Attention)`, generated once."""
    family = FAMILIES[family_model_type]
    name = f"Fusion{family.attention_cls.__name__}"
    namespace = {"__module__": __name__, "__qualname__": name, "family": family}
    return publish(type(name, (FusionAttentionMixin, family.attention_cls), namespace))


FusionLlamaAttention = fusion_attention_class("llama")
