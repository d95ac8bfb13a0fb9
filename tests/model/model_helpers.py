"""Helpers of the model tests."""

from __future__ import annotations

import torch

from llava.model import FusionLlamaConfig


def randomize_parameters(model: torch.nn.Module, parts: tuple[str, ...], std: float, seed: int) -> None:
    """Seeded normal draws (times `std`) for every parameter whose name holds one of `parts`."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in parts):
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def randomize_trainables(model: torch.nn.Module, std: float = 0.2, seed: int = 1) -> None:
    """Give the fusion branch / projector non-trivial weights (their initialisation is zero)."""
    randomize_parameters(model, (".fusion.", "mm_projector"), std, seed)


def tiny_fusion_config(**fields) -> FusionLlamaConfig:
    """A tiny Inverse-LLaVA config (hidden 32, 3 layers, GQA 4/2, a 16-wide two-layer tower)."""
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
    )
    return FusionLlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vision_config=vision,
        **fields,
    )
