"""The two fusion layers that the paper's public release trains, exactly, as named variants.

The release (https://github.com/xuhuizhan5/Inverse-LLaVA, `llava/model/fusion_layer.py`) does
not train the paper's concat layer. Per target X of each fusion layer it adds to `W_X x`:

- `release_mlp` (its `--stable_fusion False`, the default of both its scripts):
  `alpha_X * Linear2_X(GELU(Linear1_X(v)))`, with `v` the padded vision stream (zeros at text
  positions, so every text position gets the constant `alpha_X * (W2 gelu(b1) + b2)`);
  Linear1: d_v -> out_X, Linear2: out_X -> out_X, both with bias and PyTorch's default
  `nn.Linear` initialisation.
- `release_stable` (its `--stable_fusion True`):
  `alpha_X * ((x up_A) text_down + RMSNorm(v) vision_down)`, with up_A: d_h x d_v
  (`randn / sqrt(d_v)`), text_down and vision_down: d_v x out_X (`randn * 0.01`), a learnable
  RMSNorm over d_v (eps 1e-6). The text half is not masked at image positions.

`alpha_X` is one learnable scalar per target, initialised to `fusion_alpha`. Neither layer has
dropout or a hidden width of its own (the release accepts `--fusion_dropout` and
`--fusion_hidden_dim` and uses neither). Unlike the paper's layer, a freshly initialised release
layer changes the LLM's outputs. Parameter names follow the release's (`projection_1.weight`,
`up_A`, ...) under `fusion.branches.<target>`, so its checkpoints map onto them one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from llava.model.configuration import RELEASE_VARIANTS, FusionConfigMixin
from llava.model.fusion_layer import FusionLayer

_RELEASE_NORM_EPS = 1e-6  # LlamaRMSNorm's default, which the release keeps


class ReleaseLinear(nn.Linear):
    """An `nn.Linear` that keeps PyTorch's default initialisation under transformers' init pass."""


class ReleaseMLPTarget(nn.Module):
    """`alpha * Linear2(GELU(Linear1(v)))` for one target (`release_mlp`)."""

    def __init__(self, vision_dim: int, out_features: int, alpha: float):
        super().__init__()
        self.initial_alpha = alpha
        self.alpha = nn.Parameter(torch.empty(()))
        self.projection_1 = ReleaseLinear(vision_dim, out_features)
        self.projection_2 = ReleaseLinear(out_features, out_features)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init.constant_(self.alpha, self.initial_alpha)

    def vision_term(self, vision: torch.Tensor) -> torch.Tensor:
        # vision: [N, d_v] -> [N, out]
        return self.alpha * self.projection_2(F.gelu(self.projection_1(vision)))

    def text_term(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, d_h] -> [N, out]: the term of a zero vision vector, the same at every text position
        zero = x.new_zeros(1, self.projection_1.in_features)
        return self.vision_term(zero).expand(x.shape[0], -1)


class ReleaseStableTarget(nn.Module):
    """`alpha * ((x up_A) text_down + RMSNorm(v) vision_down)` for one target (`release_stable`)."""

    def __init__(self, hidden_size: int, vision_dim: int, out_features: int, alpha: float):
        super().__init__()
        self.initial_alpha = alpha
        self.alpha = nn.Parameter(torch.empty(()))
        self.up_A = nn.Parameter(torch.empty(hidden_size, vision_dim))
        self.text_down = nn.Parameter(torch.empty(vision_dim, out_features))
        self.vision_down = nn.Parameter(torch.empty(vision_dim, out_features))
        self.vision_norm = LlamaRMSNorm(vision_dim, eps=_RELEASE_NORM_EPS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init.constant_(self.alpha, self.initial_alpha)
        init.normal_(self.up_A, mean=0.0, std=1.0 / math.sqrt(self.up_A.shape[1]))
        init.normal_(self.text_down, mean=0.0, std=0.01)
        init.normal_(self.vision_down, mean=0.0, std=0.01)
        init.ones_(self.vision_norm.weight)

    def text_term(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, d_h] -> [N, out]
        return self.alpha * ((x @ self.up_A) @ self.text_down)

    def vision_term(self, vision: torch.Tensor) -> torch.Tensor:
        # vision: [N, d_v] -> [N, out]; RMSNorm(0) = 0, so text positions get no vision half
        return self.alpha * (self.vision_norm(vision) @ self.vision_down)


class ReleaseFusion(FusionLayer):
    """The release's layer for every target of one attention layer; the interface of
    `llava.model.fusion.FusionBranch` (`targets`, `split_sizes`, `forward`)."""

    def __init__(self, config: FusionConfigMixin, out_features: dict[str, int]):
        super().__init__()
        if config.fusion_variant not in RELEASE_VARIANTS:
            raise ValueError(f"ReleaseFusion builds {RELEASE_VARIANTS}, not {config.fusion_variant!r}")
        self.variant = config.fusion_variant
        self.targets = list(config.fusion_targets)
        self.split_sizes = [out_features[t] for t in self.targets]
        d_h, d_v, alpha = config.hidden_size, config.mm_hidden_size, config.fusion_alpha
        if self.variant == "release_mlp":
            branches = {t: ReleaseMLPTarget(d_v, out_features[t], alpha) for t in self.targets}
        else:
            branches = {t: ReleaseStableTarget(d_h, d_v, out_features[t], alpha) for t in self.targets}
        self.branches = nn.ModuleDict(branches)

    def _fuse(
        self, flat_x: torch.Tensor, selected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        # flat_x: [B*T, d_h] -> [B*T, total]; the text half runs at every position
        rows, _, vision = selected if selected is not None else (None, None, None)
        terms = []
        for target in self.targets:
            branch = self.branches[target]
            term = branch.text_term(flat_x)  # [B*T, out]
            if vision is not None:
                image_term = branch.vision_term(vision.to(flat_x.dtype))  # [N_img, out]
                if self.variant == "release_mlp":  # the MLP of v replaces the constant of v = 0
                    term = term.index_copy(0, rows, image_term)
                else:  # the vision half adds to the unmasked text half
                    term = term.index_add(0, rows, image_term)
            terms.append(term)
        return torch.cat(terms, dim=-1)

    def _vision_width(self) -> int:
        branch = next(iter(self.branches.values()))
        return branch.projection_1.in_features if self.variant == "release_mlp" else branch.up_A.shape[1]

    def _reference(
        self, x: torch.Tensor, vision_stream: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """The release's formulas over the full padded stream."""
        v_pad = vision_stream * image_mask.unsqueeze(-1).to(x.dtype)  # [B, T, d_v]
        terms = []
        for target in self.targets:
            branch = self.branches[target]
            if self.variant == "release_mlp":
                terms.append(branch.alpha * branch.projection_2(F.gelu(branch.projection_1(v_pad))))
            else:
                text = (x @ branch.up_A) @ branch.text_down
                terms.append(branch.alpha * (text + branch.vision_norm(v_pad) @ branch.vision_down))
        return torch.cat(terms, dim=-1)
