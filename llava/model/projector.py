"""LLaVA-1.5's vision-to-text projector (the baseline; Inverse-LLaVA has none)."""

from __future__ import annotations

from torch import nn

from llava.model.configuration import PROJECTOR_PATTERN


def build_projector(projector_type: str, in_features: int, out_features: int) -> nn.Module:
    """`linear`, `identity` or `mlp{N}x_gelu`: N linear layers with GELU between them.

    An `nn.Sequential`, so its state-dict keys (`0.weight`, `2.weight`, ...) match LLaVA's
    `mm_projector` files.
    """
    match = PROJECTOR_PATTERN.match(projector_type)
    if match is None:
        raise ValueError(f"unknown mm_projector_type {projector_type!r}")
    if projector_type == "identity":
        return nn.Identity()
    if projector_type == "linear":
        return nn.Linear(in_features, out_features)
    depth = int(match.group(2))
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)
