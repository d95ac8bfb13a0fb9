"""Data-test fixtures: the tiny tokenizer and image processor, the data validator run in-process."""

from __future__ import annotations

import logging

import pytest


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
