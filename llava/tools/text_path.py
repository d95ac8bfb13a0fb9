"""The text path of an Inverse-LLaVA fusion layer as a plain affine q/k/v projection.

With no image in the prompt every position is a text position, and a fusion layer adds to each
target projection t (q, k or v) its text term T_t(x) (the paper, arXiv 2508.12466, Eqs. 3-5:
llava/model/fusion.py; the release's and the published layers, with their sources:
release_fusion.py, published_fusion.py). Where T_t(x) = D_t x + c_t is affine in the hidden
state x, the target's projection `W_t x + b_t + T_t(x)` is the plain Linear with weight
`W_t + D_t` and bias `b_t + c_t`, and the fused model's text path is its LLM family's plain
model with those q/k/v weights. Per `fusion_variant` (alpha/s: the learned per-target scale):

| variant          | T_t(x) at a text position                         | D_t                            | c_t                              |
|------------------|---------------------------------------------------|--------------------------------|----------------------------------|
| `concat` (paper) | alpha_t A_t W_t2v x (Eq. 3 with m_text = 1)       | alpha_t A_t W_t2v              | 0                                |
| `add`            | alpha_t W_t W_t2v x                               | alpha_t W_t W_t2v              | 0                                |
| `mlp`            | alpha_t MLP_t(0), the MLP of a zero vision vector | 0                              | alpha_t (O_t gelu(b_in,t) + o_t) |
| `release_mlp`    | alpha_t Linear2_t(gelu(Linear1_t(0)))             | 0                              | alpha_t (W2_t gelu(b1_t) + b2_t) |
| `release_stable` | alpha_t (x up_A_t) text_down_t                    | alpha_t (up_A_t text_down_t)^T | 0                                |
| `published`      | s_t O_t[:, :d_v] M_t x                            | s_t O_t[:, :d_v] M_t           | 0                                |
| `gated`          | alpha_t sigmoid(G_t W_t2v x + g_t) A_t W_t2v x    | not affine: refused            |                                  |

The vision halves (B_t v, N_t(v), the vision MLP of `release_mlp`, RMSNorm(v) vision_down)
run only at image positions, of which a text-only prompt has none; dropout is off in eval. The
products are formed in float64 from the layer's parameters, then rounded once to the weights'
dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llava.cli_errors import UserError
from llava.model.fusion import FusionBranch
from llava.model.published_fusion import PublishedFusion
from llava.model.release_fusion import ReleaseFusion


class TextPathError(UserError, ValueError):
    """A model whose text path is no plain LLM of its family (a fusion term that is not affine in
    the hidden state, or a constant term on a family whose q/k/v projections have no bias)."""


@dataclass
class AffineTerm:
    """T_t(x) = weight x + bias for one target: weight `[out, d_h]` or None (no linear part),
    bias `[out]` or None (no constant part); float64."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None


def _per_target(stacked: torch.Tensor, split_sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """Rows of a tensor stacked over the targets (`[total, ...]`), split into each target's."""
    return stacked.double().split(split_sizes, dim=0)


def _branch_terms(layer: FusionBranch) -> dict[str, AffineTerm]:
    """The project's layer: `concat`, `add` (linear) and `mlp` (constant); `gated` is refused."""
    alpha = layer.alpha.double()  # [n_targets]
    if layer.variant == "gated":
        raise TextPathError(
            "fusion_variant 'gated': its text term alpha sigmoid(G W_t2v x + g) A W_t2v x is not affine "
            "in the hidden state, so no plain q/k/v projection computes it; its text path cannot be exported"
        )
    if layer.variant == "mlp":
        hidden = F.gelu(layer.mlp_in_bias.double()).split(layer.mlp_hidden)  # the first layer at v = 0
        weights = _per_target(layer.mlp_out_weight, layer.split_sizes)
        biases = _per_target(layer.mlp_out_bias, layer.split_sizes)
        return {
            target: AffineTerm(None, alpha[i] * (weights[i] @ hidden[i] + biases[i]))
            for i, target in enumerate(layer.targets)
        }
    if layer.variant not in ("concat", "add"):
        raise TextPathError(f"fusion_variant {layer.variant!r}: no text-path export is defined for it")
    halves = _per_target(layer._text_half(), layer.split_sizes)  # A_t (concat) or W_t (add): [out, d_v]
    to_vision = layer.text_to_vision.double()  # W_t2v: [d_v, d_h]
    return {
        target: AffineTerm(alpha[i] * halves[i] @ to_vision, None) for i, target in enumerate(layer.targets)
    }


def _release_terms(layer: ReleaseFusion) -> dict[str, AffineTerm]:
    """The release's layers: `release_stable` (linear, its text half unmasked) and `release_mlp`
    (the constant MLP of a zero vision vector)."""
    terms = {}
    for target in layer.targets:
        branch = layer.branches[target]
        alpha = branch.alpha.double()
        if layer.variant == "release_mlp":
            first, second = branch.projection_1, branch.projection_2
            constant = second.weight.double() @ F.gelu(first.bias.double()) + second.bias.double()
            terms[target] = AffineTerm(None, alpha * constant)
        else:
            weight = (branch.up_A.double() @ branch.text_down.double()).T  # [out, d_h]
            terms[target] = AffineTerm(alpha * weight, None)
    return terms


def _published_terms(layer: PublishedFusion) -> dict[str, AffineTerm]:
    """The published model's layer: `s_t A_t M_t` with `A_t` the text half of `output.t`."""
    terms = {}
    for target in layer.targets:
        text_half = layer.output[target].weight[:, : layer.vision_width].double()  # [out, d_v]
        to_vision = layer.text_to_vision[target].weight.double()  # M_t: [d_v, d_h]
        scale = getattr(layer.scales, target).double()  # [1]
        terms[target] = AffineTerm(scale * (text_half @ to_vision), None)
    return terms


@torch.no_grad()
def text_path_terms(layer: torch.nn.Module) -> dict[str, AffineTerm]:
    """`{target: AffineTerm}` of one fusion layer (`self_attn.fusion`), see the module docstring."""
    if isinstance(layer, FusionBranch):
        return _branch_terms(layer)
    if isinstance(layer, ReleaseFusion):
        return _release_terms(layer)
    if isinstance(layer, PublishedFusion):
        return _published_terms(layer)
    raise TextPathError(f"{type(layer).__name__}: not a fusion layer with a known text path")
