"""A user's mistake ends a command with one line naming the culprit, exit code 2 and no traceback
(`llava.cli_errors`); with `LLAVA_DEBUG=1` the traceback is there. `main()` called from Python
raises, as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from llava.cli_errors import DEBUG_ENV, UserError
from llava.eval import run_llava
from llava.extras import MissingExtraError
from llava.inference import ContextOverflowError
from llava.mm_utils import MissingImageError
from llava.model.builder import ModelBaseError, build_from_backbones, multimodal_config_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.tools.export_llava_hf import ExportRefusedError
from llava.train.arguments import FlagError
from llava.train.resume import IncompleteCheckpointError, ResumeMismatchError, UsedOutputDirError
from llava.train.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop(DEBUG_ENV, None)


def command(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line(proc: subprocess.CompletedProcess, *parts: str) -> None:
    """Exit code 2, no traceback, and the last line of stderr holds each of `parts`."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert all(part in last for part in parts), proc.stderr


@pytest.mark.parametrize(
    "error",
    [
        UsedOutputDirError,
        ResumeMismatchError,
        IncompleteCheckpointError,
        FlagError,
        ContextOverflowError,
        MissingImageError,
        ModelBaseError,
        ExportRefusedError,
        MissingExtraError,
    ],
)
def test_known_user_errors_are_user_errors(error):
    assert issubclass(error, UserError)


def _training_flags(tiny_checkpoints, toy_dataset, output_dir) -> list[str]:
    llm, vision = tiny_checkpoints
    data_path, image_folder = toy_dataset
    return [
        *("--model_name_or_path", llm, "--vision_tower", vision, "--version", "v1"),
        *("--data_path", data_path, "--image_folder", image_folder, "--output_dir", str(output_dir)),
        *("--report_to", "none", "--max_steps", "1"),
    ]


def test_a_used_output_dir_is_one_line(tiny_checkpoints, toy_dataset, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-1").mkdir(parents=True)
    flags = _training_flags(tiny_checkpoints, toy_dataset, out)
    with pytest.raises(UsedOutputDirError):
        train_main(flags)
    assert_one_line(
        command("llava.train.train", *flags),
        f"--output_dir {out} already holds a run (checkpoint-1)",
        "--resume_from_checkpoint latest",
    )


def test_a_flag_that_does_not_apply_is_one_line(tiny_checkpoints, toy_dataset, tmp_path):
    flags = _training_flags(tiny_checkpoints, toy_dataset, tmp_path / "run")
    assert_one_line(
        command("llava.train.train", *flags, "--lora_r", "8"),
        "--lora_r does not apply: LoRA is off (add --lora_enable True)",
    )


def _run_llava_args(model_path: str, image: Path) -> list[str]:
    return ["--model-path", model_path, "--image-file", str(image), "--query", "What?", "--device", "cpu"]


def test_a_missing_image_is_one_line_and_a_traceback_with_debug(tiny_model_path, tmp_path):
    args = _run_llava_args(tiny_model_path, tmp_path / "lost.png")
    with pytest.raises(MissingImageError):
        run_llava.main(args)
    assert_one_line(command("llava.eval.run_llava", *args), f"image file not found: {tmp_path / 'lost.png'}")

    debug = command("llava.eval.run_llava", *args, env={**ENV, DEBUG_ENV: "1"})
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "MissingImageError: image file not found" in debug.stderr


def test_the_chat_cli_ends_on_a_missing_image_in_one_line(tiny_model_path, tmp_path):
    lost = tmp_path / "lost.png"
    args = ["--model-path", tiny_model_path, "--image-file", str(lost), "--device", "cpu"]
    assert_one_line(command("llava.serve.cli", *args), f"image file not found: {lost}")


def test_a_runner_names_the_question_with_a_missing_image(tiny_model_path, image_folder, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": "q7", "image": "lost.png", "text": "What?"}) + "\n")
    proc = command(
        "llava.eval.model_vqa_loader",
        *("--model-path", tiny_model_path, "--question-file", str(questions), "--device", "cpu"),
        *("--image-folder", str(image_folder), "--answers-file", str(tmp_path / "a.jsonl")),
    )
    assert_one_line(proc, "question 'q7': image file not found", "--skip-missing-images")


def test_a_projector_folder_without_model_base_is_one_line(tiny_checkpoints, image_folder, tmp_path):
    folder = tmp_path / "stage1"
    multimodal_config_from_backbones("llava_llama", *tiny_checkpoints).save_pretrained(folder)
    (folder / "mm_projector.safetensors").write_bytes(b"")
    proc = command("llava.eval.run_llava", *_run_llava_args(str(folder), image_folder / "img0.png"))
    assert_one_line(proc, "holds only trained parts", "(--model-base)")


def test_an_export_refusal_is_one_line(tiny_checkpoints, tmp_path):
    llm, vision = tiny_checkpoints  # the default tiny tokenizer: text after <image> tokenises otherwise
    model, _ = build_from_backbones("llava_llama", llm, vision)
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(llm).save_pretrained(checkpoint)
    load_image_processor(vision).save_pretrained(checkpoint)
    proc = command(
        "llava.tools.export_llava_hf", "--model-path", str(checkpoint), "--output-dir", str(tmp_path / "hf")
    )
    assert_one_line(proc, "tokenise prompts differently", "pass --allow-prompt-mismatch")
    assert not (tmp_path / "hf").exists()
