"""Shared fixtures: tiny offline checkpoints built once per test session."""

from __future__ import annotations

import pytest
import torch

from llava.tools.make_tiny_checkpoints import make_tiny_checkpoints


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[str, str]:
    """`(llm_path, vision_path)`: a tiny Llama with its tokenizer and a tiny CLIP tower (32 px, 16 patches)."""
    llm, vision = make_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))
    return str(llm), str(vision)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
