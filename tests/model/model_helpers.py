"""Helpers of the model tests."""

from __future__ import annotations

import torch


def randomize_trainables(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> None:
    """Give the fusion branch / projector non-trivial weights (their initialisation is zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".fusion." in name or "mm_projector" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
