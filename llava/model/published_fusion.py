"""The fusion layer of the authors' October 2026 rewrite and of their published 7B model.

Source: https://github.com/xuhuizhan5/Inverse-LLaVA at b1d7ab31fd8228ad7912bb697e1c4e77e2e4ef13,
`src/invllava/model/fusion.py` (`FusionBlock`, concat operator) and
`docs/method/METHOD_CONTRACT.md`. For every target t among q, k, v of a fusion layer:

    t = W_t x + s_t * O_t . concat(m_text * (M_t x), m_vis * N_t(V_pad))

- `M_t` (`text_to_vision.t`, d_v x d_h): the text-to-vision map, one per target;
- `N_t` (`visual_norm.t`): an RMSNorm over d_v with a learned weight, eps 1e-6, reduced in fp32;
- `O_t` (`output.t`, out_t x 2 d_v): W_concat of the target;
- `s_t` (`scales.t`): a learned scalar, initialised to `fusion_alpha` (1.0).

No biases, no dropout. Fresh weights are drawn in fp32 and then cast to the parameter's dtype:
`M_t ~ N(0, 1/sqrt(d_v))`, `O_t ~ N(0, 1e-4)`, norm weights 1. The masks are complementary, so
with `O_t = [A_t | B_t]` a text position gets `s_t A_t M_t x` and an image position
`s_t B_t N_t(v)`: this module computes that split form; `reference_forward` keeps the literal one.

Every parameter-owning part is a module called through `__call__` (DeepSpeed ZeRO-3 gathers a
module's own parameters when it is called). Parameter names under `self_attn.fusion` are the
bundle's (`text_to_vision.q.weight`, `output.q.weight`, `visual_norm.q.weight`, `scales.q`), so
`language_model.model.layers.L.self_attn.fusion.*` in the authors' bundle is
`model.layers.L.self_attn.fusion.*` here, tensor for tensor, with the same shapes except the
scales: `[1]` here, `[]` there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from llava.model.configuration import FusionConfigMixin
from llava.model.fusion_layer import FusionLayer

VISUAL_NORM_EPS = 1e-6
OUTPUT_INIT_STD = 1e-4


def normal_in_fp32_(param: nn.Parameter, std: float) -> None:
    """N(0, std) drawn in float32 and cast to the parameter's dtype; a parameter already loaded
    from a checkpoint (transformers' `_is_hf_initialized`) is left alone."""
    if getattr(param, "_is_hf_initialized", False):
        return
    draws = torch.empty(param.shape, dtype=torch.float32, device=param.device).normal_(0.0, std)
    init.copy_(param, draws)


class TextToVision(nn.Module):
    """`M_t x`: [N, d_h] -> [N, d_v], no bias."""

    def __init__(self, hidden_size: int, vision_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vision_dim, hidden_size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        normal_in_fp32_(self.weight, 1.0 / math.sqrt(self.weight.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class VisualRMSNorm(nn.Module):
    """`N_t(v) = w_t * v / rms(v)`, the mean of squares taken in fp32: [N, d_v] -> [N, d_v]."""

    def __init__(self, vision_dim: int, eps: float = VISUAL_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(vision_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        init.ones_(self.weight)

    def forward(self, vision: torch.Tensor) -> torch.Tensor:
        v = vision.float()
        normed = v * torch.rsqrt(v.square().mean(-1, keepdim=True) + self.eps)  # RMSNorm(0) = 0
        return self.weight.to(vision.dtype) * normed.to(vision.dtype)


class ConcatOutput(nn.Module):
    """W_concat of one target, `[A | B]` (out x 2 d_v, no bias), applied by halves: the text rows'
    mapped states `[N_text, d_v]` to A, the image rows' normalised features `[N_img, d_v]` to B."""

    def __init__(self, vision_dim: int, out_features: int):
        super().__init__()
        self.vision_dim = vision_dim
        self.weight = nn.Parameter(torch.empty(out_features, 2 * vision_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        normal_in_fp32_(self.weight, OUTPUT_INIT_STD)

    def forward(
        self, text: torch.Tensor, vision: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        text_out = F.linear(text, self.weight[:, : self.vision_dim])  # [N_text, out]
        vision_out = None if vision is None else F.linear(vision, self.weight[:, self.vision_dim :])
        return text_out, vision_out


class TargetScales(nn.Module):
    """One learned scale per target, named by the target (`scales.q`) as in the bundle. Each is a
    one-element vector (`[1]`), not a 0-dim tensor as the bundle stores it: DeepSpeed ZeRO-3
    cannot partition a 0-dim parameter."""

    def __init__(self, targets: list[str], initial: float):
        super().__init__()
        self.initial = initial
        for target in targets:
            self.register_parameter(target, nn.Parameter(torch.empty(1)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for param in self.parameters():
            init.constant_(param, self.initial)

    def forward(self, target: str, term: torch.Tensor) -> torch.Tensor:
        return getattr(self, target).to(term.dtype) * term


class PublishedFusion(FusionLayer):
    """The published model's layer for every target of one attention layer (`fusion_variant`
    `published`); the interface of `llava.model.fusion.FusionBranch`."""

    def __init__(self, config: FusionConfigMixin, out_features: dict[str, int]):
        super().__init__()
        if config.fusion_variant != "published":
            raise ValueError(f"PublishedFusion builds the 'published' variant, not {config.fusion_variant!r}")
        d_h, d_v = config.hidden_size, config.mm_hidden_size
        self.targets = list(config.fusion_targets)
        self.split_sizes = [out_features[t] for t in self.targets]
        self.vision_width = d_v
        self.text_to_vision = nn.ModuleDict({t: TextToVision(d_h, d_v) for t in self.targets})
        self.visual_norm = nn.ModuleDict({t: VisualRMSNorm(d_v) for t in self.targets})
        self.output = nn.ModuleDict({t: ConcatOutput(d_v, out_features[t]) for t in self.targets})
        self.scales = TargetScales(self.targets, config.fusion_alpha)

    def _fuse(
        self, flat_x: torch.Tensor, selected: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """The split form. flat_x: [B*T, d_h] -> [B*T, total]."""
        if selected is None:  # every position is text (decode steps, text-only prompts)
            return torch.cat([self._target(t, flat_x, None)[0] for t in self.targets], dim=-1)
        rows, text_rows, vision = selected  # [N_img], [N_text], [N_img, d_v]
        text_x = flat_x.index_select(0, text_rows)  # [N_text, d_h]
        vision = vision.to(flat_x.dtype)
        terms = []
        for target, width in zip(self.targets, self.split_sizes, strict=True):
            text_term, image_term = self._target(target, text_x, vision)
            term = flat_x.new_zeros(flat_x.shape[0], width)  # [B*T, out]
            terms.append(term.index_copy(0, text_rows, text_term).index_copy(0, rows, image_term))
        return torch.cat(terms, dim=-1)

    def _target(
        self, target: str, text_x: torch.Tensor, vision: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`s_t A_t M_t x` on the text rows and `s_t B_t N_t(v)` on the image rows of one target."""
        normed = None if vision is None else self.visual_norm[target](vision)  # [N_img, d_v]
        text_out, image_out = self.output[target](self.text_to_vision[target](text_x), normed)
        scaled_image = None if image_out is None else self.scales(target, image_out)
        return self.scales(target, text_out), scaled_image

    def _vision_width(self) -> int:
        return self.vision_width

    def _reference(
        self, x: torch.Tensor, vision_stream: torch.Tensor, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """`s_t O_t . concat(m_text * M_t x, m_vis * N_t(V_pad))` over the full padded stream."""
        text_mask = (~image_mask).unsqueeze(-1).to(x.dtype)  # m_text: [B, T, 1]
        vision_mask = image_mask.unsqueeze(-1).to(x.dtype)  # m_vis: [B, T, 1]
        terms = []
        for target in self.targets:
            mapped = self.text_to_vision[target](x) * text_mask  # [B, T, d_v]
            normed = self.visual_norm[target](vision_stream.to(x.dtype)) * vision_mask  # [B, T, d_v]
            joint = torch.cat([mapped, normed], dim=-1)  # [B, T, 2 d_v]
            terms.append(self.scales(target, F.linear(joint, self.output[target].weight)))
        return torch.cat(terms, dim=-1)
