"""Short answers (VQAv2, GQA, VizWiz, TextVQA, POPE, MME, SEED-Bench): LLaVA's `model_vqa_loader`.

    python -m llava.eval.model_vqa_loader --model-path CKPT --question-file Q.jsonl \
        --image-folder IMAGES --answers-file A.jsonl [--num-chunks K --chunk-idx i] [--batch-size B]

The question file's `text` already ends with the benchmark's suffix; at most 128 new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from llava.eval.benchmarks import LOADER_RUNNER, MAX_NEW_TOKENS
from llava.eval.runner import AnswerTask, RunSummary, question_sample, read_question_jsonl

TASK = AnswerTask(
    name=LOADER_RUNNER,
    description="Answer a LLaVA question file with short answers.",
    max_new_tokens=MAX_NEW_TOKENS[LOADER_RUNNER],
    read_records=read_question_jsonl,
    to_samples=question_sample,
)


def main(argv: Sequence[str] | None = None) -> RunSummary:
    return TASK.main(argv)


if __name__ == "__main__":
    main()
