"""Free-form answers (LLaVA-Bench in-the-wild, MM-Vet): LLaVA's `model_vqa`.

    python -m llava.eval.model_vqa --model-path CKPT --question-file Q.jsonl \
        --image-folder IMAGES --answers-file A.jsonl

Each question's `text` is the user message after the image; at most 1024 new tokens.
"""

from __future__ import annotations

from llava.cli_errors import run_command
from llava.eval.benchmarks import FREEFORM_RUNNER, MAX_NEW_TOKENS
from llava.eval.runner import question_file_task

TASK = question_file_task(
    FREEFORM_RUNNER, "Answer a LLaVA question file with free-form answers.", MAX_NEW_TOKENS[FREEFORM_RUNNER]
)
main = TASK.main

if __name__ == "__main__":
    run_command(main)
