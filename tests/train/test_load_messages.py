"""What a user reads when a LoRA run is trained, saved, resumed and loaded: the project's load
report (`llava.model.load_report.LoadReport`), without transformers' table calling the fusion
weights MISSING / newly initialized and without its warning about a `llama` config instantiating
a `fusion_llama` model."""

from __future__ import annotations

import logging
import shutil

import pytest

from llava.model.builder import load_pretrained_model
from llava.train.resume import SUMMARY_FILE
from llava.train.train import main
from tests.train.train_helpers import FUSION_FLAGS

TRANSFORMERS_LINES = ("LOAD REPORT", "newly initialized", "to instantiate a model of type")


@pytest.fixture
def transformers_caplog(caplog):
    """`caplog` holding transformers' records too: its logger does not propagate outside CI."""
    library = logging.getLogger("transformers")
    library.addHandler(caplog.handler)
    yield caplog
    library.removeHandler(caplog.handler)


def _absent(text: str) -> None:
    for line in TRANSFORMERS_LINES:
        assert line not in text, text


def test_a_lora_run_is_reported_by_the_project_alone(
    run_flags, tiny_checkpoints, tmp_path, transformers_caplog
):
    caplog, out = transformers_caplog, tmp_path / "run"
    argv = run_flags(out, *FUSION_FLAGS, "--max_steps", "2", "--save_steps", "1")
    with caplog.at_level(logging.INFO, logger="llava"):
        summary = main(argv)
    _absent(caplog.text)
    fusion = summary["newly_initialised"]
    assert fusion and all(".fusion." in name for name in fusion)
    assert f"newly initialised: {fusion}" in caplog.text

    caplog.clear()  # as if killed after step 1: resuming checks the saved adapter against the model
    shutil.rmtree(out / "checkpoint-2")
    (out / SUMMARY_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="llava"):
        main([*argv, "--resume_from_checkpoint", "latest"])
    assert f"resumed trained weights from {out / 'checkpoint-1'}" in caplog.text
    _absent(caplog.text)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llava.model.builder"):
        load_pretrained_model(str(out), tiny_checkpoints[0], device="cpu")
    _absent(caplog.text)
    assert "non_lora_trainables.safetensors; newly initialised: none" in caplog.text
