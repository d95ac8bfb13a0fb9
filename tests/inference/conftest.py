"""Inference-test fixtures: the tiny checkpoint loaded once."""

from __future__ import annotations

import pytest

from llava.inference import LoadedModel


@pytest.fixture(scope="session")
def engine(tiny_model_path) -> LoadedModel:
    return LoadedModel.load(tiny_model_path, device="cpu")
