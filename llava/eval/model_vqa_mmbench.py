"""MMBench / MMBench-CN: LLaVA's `model_vqa_mmbench`, on the benchmark's TSV (base64 images).

    python -m llava.eval.model_vqa_mmbench --model-path CKPT \
        --question-file mmbench/mmbench_dev_20230712.tsv --answers-file A.jsonl \
        --single-pred-prompt [--lang cn] [--all-rounds]

The question is `[hint\\n]question` followed by one `\\nX. option` line per option: columns A-D
up to the first one LLaVA skips (a cell pandas reads as NaN, or "nan" / "none" in any case:
`eval_mmbench.is_none`; the hint is dropped on the same rule). The answer file's `prompt` holds
that text; the model sees it after `<image>\\n` and, with `--single-pred-prompt`, followed by the
multiple-choice suffix (Chinese with `--lang cn`). `--all-rounds` asks each question once per
option, rotating the option texts under the fixed letters (`eval_mmbench.round_options`, which
the scorer uses too); answers carry `round_id`, `options` and `option_char`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from llava.cli_errors import run_command
from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.eval.benchmarks import MAX_NEW_TOKENS, MMBENCH_RUNNER
from llava.eval.eval_mmbench import is_none, read_mmbench_tsv, round_options, row_options
from llava.eval.prompts import MULTIPLE_CHOICE_SUFFIX, MULTIPLE_CHOICE_SUFFIX_CN
from llava.eval.runner import AnswerTask, ImageRef, Sample


def add_mmbench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lang", default="en", choices=("en", "cn"), help="language of the multiple-choice suffix"
    )
    parser.add_argument("--all-rounds", action="store_true", help="ask once per option, rotating the options")


def read_mmbench(args: argparse.Namespace) -> list[dict[str, str]]:
    return read_mmbench_tsv(args.question_file)


def mmbench_samples(row: Mapping[str, str], args: argparse.Namespace) -> list[Sample]:
    try:
        question_id = int(row["index"])
    except ValueError as err:
        raise ValueError(f"{args.question_file}: index {row['index']!r} is not an integer") from err
    letters = row_options(row)
    image = ImageRef.from_base64(row.get("image") or "", f"{args.question_file} index {question_id}")
    suffix = MULTIPLE_CHOICE_SUFFIX_CN if args.lang == "cn" else MULTIPLE_CHOICE_SUFFIX
    samples = []
    for round_id in range(len(letters) if args.all_rounds else 1):
        options, option_chars = round_options(row, round_id)
        question = row["question"]
        if not is_none(row.get("hint")):
            question = f"{row['hint']}\n{question}"
        for letter, option in zip(letters, options, strict=True):
            question += f"\n{letter}. {option}"
        query = f"{DEFAULT_IMAGE_TOKEN}\n{question}" + (suffix if args.single_pred_prompt else "")
        samples.append(
            Sample(
                question_id,
                prompt=question,
                query=query,
                images=(image,),
                extra={"round_id": round_id, "options": options, "option_char": option_chars},
            )
        )
    return samples


TASK = AnswerTask(
    name=MMBENCH_RUNNER,
    description="Answer MMBench / MMBench-CN (TSV with base64 images).",
    max_new_tokens=MAX_NEW_TOKENS[MMBENCH_RUNNER],
    read_records=read_mmbench,
    to_samples=mmbench_samples,
    add_arguments=add_mmbench_arguments,
    uses_image_folder=False,
    record_options=("all_rounds", "lang"),
)
main = TASK.main


if __name__ == "__main__":
    run_command(main)
