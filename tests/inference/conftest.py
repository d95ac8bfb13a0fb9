"""Inference-test fixtures: the tiny checkpoint loaded once."""

from __future__ import annotations

import pytest
import torch

from llava.inference import LoadedModel


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def engine(tiny_model_path) -> LoadedModel:
    return LoadedModel.load(tiny_model_path, device="cpu")
