"""The inference CLIs on a tiny checkpoint: one-shot `run_llava` and the interactive `serve.cli`."""

from __future__ import annotations

import io
import logging

import pytest

from llava.eval import run_llava
from llava.serve import cli


def test_run_llava_prints_the_answer(tiny_model_path, image_folder, capsys):
    args = ["--model-path", tiny_model_path, "--image-file", str(image_folder / "img0.png")]
    answer = run_llava.main(
        [*args, "--query", "What is in the image?", "--max_new_tokens", "6", "--temperature", "0"]
    )
    assert answer and capsys.readouterr().out == answer + "\n"
    # The same question with the placeholder written out gives the same greedy answer.
    again = run_llava.main(
        [*args, "--query", "<image>\nWhat is in the image?", "--max_new_tokens", "6", "--temperature", "0"]
    )
    assert again == answer


def test_run_llava_several_images(tiny_model_path, image_folder, capsys, caplog):
    files = f"{image_folder / 'img0.png'},{image_folder / 'img2.png'}"
    args = ["--model-path", tiny_model_path, "--image-file", files, "--max_new_tokens", "4"]
    with caplog.at_level(logging.DEBUG, logger="llava.eval.run_llava"):
        answer = run_llava.main([*args, "--query", "What is in the image?", "--temperature", "0"])
    assert capsys.readouterr().out == answer + "\n"
    assert "USER: <image>\\n<image>\\nWhat is in the image? ASSISTANT:" in caplog.text
    with pytest.raises(ValueError, match="holds 1 <image> placeholder"):
        run_llava.main([*args, "--query", "<image>\nWhat is in the image?"])


def test_run_llava_missing_image_names_it(tiny_model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        run_llava.main(
            ["--model-path", tiny_model_path, "--image-file", str(tmp_path / "absent.png"), "--query", "q"]
        )


def test_cli_two_turns_keep_the_history(tiny_model_path, image_folder, monkeypatch, capsys, caplog):
    monkeypatch.setattr("sys.stdin", io.StringIO("What is in the image?\nHow many squares are there?\n"))
    args = ["--model-path", tiny_model_path, "--image-file", str(image_folder / "img1.png")]
    with caplog.at_level(logging.DEBUG, logger="llava.serve.cli"):
        session = cli.main([*args, "--temperature", "0", "--max-new-tokens", "6", "--debug"])
    (q1, a1), (q2, a2) = session.history
    assert q1 == "<image>\nWhat is in the image?" and q2 == "How many squares are there?"
    assert a1
    prompts = [r.args[0] for r in caplog.records if r.name == "llava.serve.cli" and r.msg == "prompt: %r"]
    assert len(prompts) == 2
    assert (
        prompts[1].startswith(prompts[0])
        and f"ASSISTANT: {a1}</s>USER: How many squares are there? ASSISTANT:" in prompts[1]
    )
    out = capsys.readouterr().out
    assert f"USER: ASSISTANT: {a1}\n" in out and f"ASSISTANT: {a2}\n" in out  # streamed replies
    assert out.endswith("USER: \n")  # the end of input closed the session


def test_cli_ends_on_empty_input(tiny_model_path, image_folder, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\nnever asked\n"))
    session = cli.main(["--model-path", tiny_model_path, "--image-file", str(image_folder / "img1.png")])
    assert session.history == []
