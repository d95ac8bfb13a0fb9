"""Tiny multimodal models built from the session's tiny checkpoints."""

from __future__ import annotations

import pytest
import torch

from llava.model.builder import build_from_backbones


def randomize_trainables(model, std: float = 0.2, seed: int = 1) -> None:
    """Give the fusion branch / projector non-trivial weights (their initialisation is zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".fusion." in name or "mm_projector" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


@pytest.fixture
def build(tiny_checkpoints):
    """`build(model_type, randomize=True, **config_fields)` -> an eval-mode model (fp32, eager attention)."""
    llm, vision = tiny_checkpoints

    def _build(model_type: str = "fusion_llama", randomize: bool = True, attn: str = "eager", **fields):
        model, _ = build_from_backbones(model_type, llm, vision, attn_implementation=attn, **fields)
        if randomize:
            randomize_trainables(model)
        return model.eval()

    return _build


@pytest.fixture
def images():
    """Four random 32 px images `[4, 3, 32, 32]` (already normalised pixels)."""
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
