"""Tiny multimodal models built from the session's tiny checkpoints."""

from __future__ import annotations

import pytest
import torch

from llava.model.builder import build_from_backbones
from tests.model.authors_bundle_helpers import TinyHub, make_tiny_hub
from tests.model.model_helpers import randomize_trainables


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


@pytest.fixture(scope="session")
def tiny_hub(tiny_checkpoints, tmp_path_factory) -> TinyHub:
    """A Hugging Face cache (its own folder, layout `models--org--name/...`) holding the tiny
    Llama and CLIP as `tiny-org/tiny-vicuna` and `tiny-org/tiny-clip` at pinned revisions."""
    return make_tiny_hub(tmp_path_factory.mktemp("hf-cache"), *tiny_checkpoints)
