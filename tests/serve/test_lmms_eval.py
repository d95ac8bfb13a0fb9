"""lmms-eval runs `--model inverse_llava` on a local task (a task YAML over local files, offline),
and its answers equal this project's runner's for the same questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.lmms_eval_helpers import loader_answers, logged_samples, run_lmms_eval, sample_answers

# lmms-eval is installed by .ci/run (with --no-deps: its own requirements pull a CUDA torch).
pytest.importorskip("lmms_eval", reason="needs lmms-eval, installed as .ci/run does")

MAX_NEW_TOKENS = 10
QUESTIONS = [
    "What colour is the picture?",
    "Is there a white square?",
    "Describe the image.",
    "What shape is shown?",
    "How many colours are there?",
]

TASK_YAML = """\
task: inverse_llava_tiny
dataset_path: json
dataset_kwargs:
  data_files:
    test: {questions}
test_split: test
output_type: generate_until
doc_to_visual: !function inverse_llava_tiny_utils.doc_to_visual
doc_to_text: !function inverse_llava_tiny_utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  do_sample: false
  until: ["ASSISTANT:"]
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""

TASK_UTILS = '''\
"""Hooks of the local task: the image of a question file line, and its text."""

from PIL import Image


def doc_to_visual(doc):
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["text"]
'''


@pytest.fixture(scope="module")
def local_task(image_folder, tmp_path_factory) -> tuple[Path, Path]:
    """`(question file, task folder)`: LLaVA's question-file format, read by both."""
    root = tmp_path_factory.mktemp("lmms")
    questions = root / "questions.jsonl"
    with questions.open("w", encoding="utf-8") as f:
        for i, text in enumerate(QUESTIONS):
            image = str(image_folder / f"img{i % 4}.png")
            f.write(json.dumps({"question_id": i, "image": image, "text": text, "answer": "red"}) + "\n")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "inverse_llava_tiny.yaml").write_text(
        TASK_YAML.format(questions=questions, max_new_tokens=MAX_NEW_TOKENS), encoding="utf-8"
    )
    (tasks / "inverse_llava_tiny_utils.py").write_text(TASK_UTILS, encoding="utf-8")
    return questions, tasks


@pytest.fixture(scope="module")
def runner_answers(tiny_model_path, local_task, tmp_path_factory) -> list[str]:
    questions, _ = local_task
    return loader_answers(tiny_model_path, questions, tmp_path_factory.mktemp("runner"), MAX_NEW_TOKENS)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["chat", "simple"])
def test_lmms_eval_answers_equal_the_runners(mode, tiny_model_path, local_task, runner_answers, tmp_path):
    _, tasks = local_task
    extra = ("--force_simple",) if mode == "simple" else ()
    out = run_lmms_eval(tiny_model_path, tasks, "inverse_llava_tiny", tmp_path, *extra)
    rows = logged_samples(out, "inverse_llava_tiny")
    assert [r["input"] for r in rows] == QUESTIONS
    assert sample_answers(rows) == runner_answers
    (results,) = (tmp_path / "out").rglob("*_results.json")
    assert "exact_match,none" in json.loads(results.read_text())["results"]["inverse_llava_tiny"]


def test_lmms_eval_model_takes_a_dtype(tiny_model_path):
    """`--model_args pretrained=...,dtype=bfloat16` loads the model in bf16; an unknown dtype is refused."""
    import torch

    from llava.serve.lmms_eval_model import InverseLlavaSimple

    model = InverseLlavaSimple(pretrained=tiny_model_path, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in model.engine.model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match="dtype='bf16' is not one of"):
        InverseLlavaSimple(pretrained=tiny_model_path, device="cpu", dtype="bf16")
