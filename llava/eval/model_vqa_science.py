"""ScienceQA: LLaVA's `model_vqa_science`, on the LLaVA conversation-format question file.

    python -m llava.eval.model_vqa_science --model-path CKPT \
        --question-file scienceqa/llava_test_CQM-A.json --image-folder scienceqa/images/test \
        --answers-file A.jsonl --single-pred-prompt

Each item's first (human) message, stripped of its `<image>`, is the question; items with an
`image` get `<image>\\n` put back in front, and `--single-pred-prompt` appends the
multiple-choice suffix. The answer file's `prompt` holds both; items without an image are asked
as text only.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from llava.cli_errors import run_command
from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.benchmarks import MAX_NEW_TOKENS, SCIENCE_RUNNER
from llava.eval.prompts import MULTIPLE_CHOICE_SUFFIX
from llava.eval.runner import AnswerTask, ImageRef, Sample


def read_science_questions(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The JSON list of conversation items (`id`, optional `image`, `conversations`)."""
    path = Path(args.question_file).expanduser()
    with path.open(encoding="utf-8") as f:
        items = json.load(f)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(items).__name__}")
    for i, item in enumerate(items):
        if "id" not in item or not item.get("conversations"):
            raise ValueError(f"{path}: item {i} needs an 'id' and a non-empty 'conversations'")
    return items


def science_sample(item: dict[str, Any], args: argparse.Namespace) -> list[Sample]:
    question = item["conversations"][0]["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
    images: tuple[ImageRef, ...] = ()
    if "image" in item:
        question = f"{DEFAULT_IMAGE_TOKEN}\n{question}"
        images = (ImageRef.from_file(os.path.join(args.image_folder, item["image"])),)
    if args.single_pred_prompt:
        question += MULTIPLE_CHOICE_SUFFIX
    return [Sample(item["id"], prompt=question, query=question, images=images)]


TASK = AnswerTask(
    name=SCIENCE_RUNNER,
    description="Answer ScienceQA (LLaVA conversation format).",
    max_new_tokens=MAX_NEW_TOKENS[SCIENCE_RUNNER],
    read_records=read_science_questions,
    to_samples=science_sample,
)
main = TASK.main


if __name__ == "__main__":
    run_command(main)
