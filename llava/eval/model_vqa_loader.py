"""Short answers (VQAv2, GQA, VizWiz, TextVQA, POPE, MME, SEED-Bench): LLaVA's `model_vqa_loader`.

    python -m llava.eval.model_vqa_loader --model-path CKPT --question-file Q.jsonl \
        --image-folder IMAGES --answers-file A.jsonl [--num-chunks K --chunk-idx i] [--batch-size B]

The question file's `text` already ends with the benchmark's suffix; at most 128 new tokens.
"""

from __future__ import annotations

from llava.cli_errors import run_command
from llava.eval.benchmarks import LOADER_RUNNER, MAX_NEW_TOKENS
from llava.eval.runner import question_file_task

TASK = question_file_task(
    LOADER_RUNNER, "Answer a LLaVA question file with short answers.", MAX_NEW_TOKENS[LOADER_RUNNER]
)
main = TASK.main

if __name__ == "__main__":
    run_command(main)
