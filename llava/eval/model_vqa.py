"""Free-form answers (LLaVA-Bench in-the-wild, MM-Vet): LLaVA's `model_vqa`.

    python -m llava.eval.model_vqa --model-path CKPT --question-file Q.jsonl \
        --image-folder IMAGES --answers-file A.jsonl

Each question's `text` is the user message after the image; at most 1024 new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from llava.eval.benchmarks import FREEFORM_RUNNER, MAX_NEW_TOKENS
from llava.eval.runner import AnswerTask, RunSummary, question_sample, read_question_jsonl

TASK = AnswerTask(
    name=FREEFORM_RUNNER,
    description="Answer a LLaVA question file with free-form answers.",
    max_new_tokens=MAX_NEW_TOKENS[FREEFORM_RUNNER],
    read_records=read_question_jsonl,
    to_samples=question_sample,
)


def main(argv: Sequence[str] | None = None) -> RunSummary:
    return TASK.main(argv)


if __name__ == "__main__":
    main()
