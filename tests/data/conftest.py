"""Data-test fixtures: the tiny tokenizer and image processor, a toy data set, one thread."""

from __future__ import annotations

import logging

import pytest
import torch

from llava.data.toy import toy_records, write_dataset


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Two cores shared by parallel jobs: one intra-op thread avoids oversubscription."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> tuple[str, str]:
    """`(json_path, image_folder)` of 24 well-formed records (18 with an image, 6 text-only)."""
    return write_dataset(tmp_path_factory.mktemp("toy"), *toy_records())


@pytest.fixture(scope="session")
def tokenizer(tiny_checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoints[0])


@pytest.fixture(scope="session")
def image_processor(tiny_checkpoints):
    from llava.model.vision_tower import load_image_processor

    return load_image_processor(tiny_checkpoints[1])


@pytest.fixture
def validator(caplog, capsys):
    """`validator(argv)` -> `(status, log)`: `python -m llava.data.validate` run in-process; what it
    reports goes to the log (none of it to stdout)."""
    from llava.data.validate import main

    def _run(argv: list[str]) -> tuple[int, str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="llava.data"):
            status = main(argv)
        assert capsys.readouterr().out == ""
        return status, caplog.text

    return _run
