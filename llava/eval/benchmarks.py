"""The benchmark registry: one frozen definition per LLaVA-1.5 benchmark, and chunk merging.

File layout, prompts, runners and the reported LLaVA-1.5 numbers follow
https://github.com/haotian-liu/LLaVA/blob/main/docs/Evaluation.md and the LLaVA-1.5 paper
(Liu et al., 2023, "Improved Baselines with Visual Instruction Tuning", Table 4). OCRBench, AI2D,
MMStar and VQAv2 val, which LLaVA-1.5 did not report, follow their official scoring (lmms-eval's
for AI2D) and lmms-eval's prompts (LLaVA-1.5's for VQAv2 val); `llava.eval.question_files` makes
their question files. Paths are relative to `playground/data/eval/`;
`scripts/v1_5/eval/<name>.sh` runs each one.

    python -m llava.eval.benchmarks list
    python -m llava.eval.benchmarks merge --answers-dir DIR --num-chunks K
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval import (
    converters,
    eval_ai2d,
    eval_gqa,
    eval_mmbench,
    eval_mme,
    eval_mmstar,
    eval_ocrbench,
    eval_pope,
    eval_science_qa,
    eval_seed,
    eval_textvqa,
    eval_vqav2,
    judge,
    question_files,
    run_record,
)
from llava.eval.prompts import (
    MULTIPLE_CHOICE_SUFFIX,
    MULTIPLE_CHOICE_SUFFIX_CN,
    SHORT_ANSWER_SUFFIX,
    VIZWIZ_SUFFIX,
)
from llava.eval.run_record import FREEFORM_RUNNER, LOADER_RUNNER, MMBENCH_RUNNER, SCIENCE_RUNNER

logger = logging.getLogger(__name__)

EVAL_ROOT = Path("playground/data/eval")

MAX_NEW_TOKENS = {LOADER_RUNNER: 128, FREEFORM_RUNNER: 1024, SCIENCE_RUNNER: 1024, MMBENCH_RUNNER: 1024}

MainFn = Callable[[Sequence[str] | None], Any]


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark is run and scored. `prompt_suffix` is already inside the question file
    for the loader runners; the ScienceQA and MMBench runners append it (`--single-pred-prompt`).
    `builder` makes the question file from the benchmark's release files where LLaVA ships none;
    `llava15_7b` / `llava15_13b` are None where LLaVA-1.5 reported no number."""

    name: str
    title: str
    question_file: str
    image_folder: str | None
    answers_dir: str
    runner: str
    prompt_suffix: str
    scoring: str  # "local", "server" (EvalAI / MMBench / SEED leaderboard) or "gpt4" (external judge)
    converter: MainFn | None
    scorer: MainFn | None
    llava15_7b: float | None
    llava15_13b: float | None
    table1_label: str | None = None
    chunked: bool = False
    single_pred_prompt: bool = False
    lang: str = "en"
    builder: MainFn | None = None

    @property
    def max_new_tokens(self) -> int:
        return MAX_NEW_TOKENS[self.runner]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="vqav2",
            title="VQAv2 (test-dev)",
            question_file="vqav2/llava_vqav2_mscoco_test-dev2015.jsonl",
            image_folder="vqav2/test2015",
            answers_dir="vqav2/answers/llava_vqav2_mscoco_test-dev2015",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="server",
            converter=converters.vqav2_main,
            scorer=None,
            llava15_7b=78.5,
            llava15_13b=80.0,
            table1_label="VQAv2",
            chunked=True,
        ),
        Benchmark(
            name="gqa",
            title="GQA (test-dev balanced)",
            question_file="gqa/llava_gqa_testdev_balanced.jsonl",
            image_folder="gqa/data/images",
            answers_dir="gqa/answers/llava_gqa_testdev_balanced",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="local",
            converter=converters.gqa_main,
            scorer=eval_gqa.main,
            llava15_7b=62.0,
            llava15_13b=63.3,
            table1_label="GQA",
            chunked=True,
        ),
        Benchmark(
            name="vizwiz",
            title="VizWiz (test-dev)",
            question_file="vizwiz/llava_test.jsonl",
            image_folder="vizwiz/test",
            answers_dir="vizwiz/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=VIZWIZ_SUFFIX,
            scoring="server",
            converter=converters.vizwiz_main,
            scorer=None,
            llava15_7b=50.0,
            llava15_13b=53.6,
            table1_label="VizWiz",
        ),
        Benchmark(
            name="sqa",
            title="ScienceQA-IMG",
            question_file="scienceqa/llava_test_CQM-A.json",
            image_folder="scienceqa/images/test",
            answers_dir="scienceqa/answers",
            runner=SCIENCE_RUNNER,
            prompt_suffix=MULTIPLE_CHOICE_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_science_qa.main,
            llava15_7b=66.8,
            llava15_13b=71.6,
            table1_label="SQA-I",
            single_pred_prompt=True,
        ),
        Benchmark(
            name="textvqa",
            title="TextVQA (val)",
            question_file="textvqa/llava_textvqa_val_v051_ocr.jsonl",
            image_folder="textvqa/train_images",
            answers_dir="textvqa/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_textvqa.main,
            llava15_7b=58.2,
            llava15_13b=61.3,
            table1_label="TextVQA",
        ),
        Benchmark(
            name="pope",
            title="POPE (mean F1)",
            question_file="pope/llava_pope_test.jsonl",
            image_folder="pope/val2014",
            answers_dir="pope/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_pope.main,
            llava15_7b=85.9,
            llava15_13b=85.9,
        ),
        Benchmark(
            name="mme",
            title="MME (perception)",
            question_file="MME/llava_mme.jsonl",
            image_folder="MME/MME_Benchmark_release_version",
            answers_dir="MME/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_mme.main,
            llava15_7b=1510.7,
            llava15_13b=1531.3,
            table1_label="MME-P",
        ),
        Benchmark(
            name="mmbench",
            title="MMBench (dev)",
            question_file="mmbench/mmbench_dev_20230712.tsv",
            image_folder=None,
            answers_dir="mmbench/answers/mmbench_dev_20230712",
            runner=MMBENCH_RUNNER,
            prompt_suffix=MULTIPLE_CHOICE_SUFFIX,
            scoring="server",
            converter=converters.mmbench_main,
            scorer=eval_mmbench.main,
            llava15_7b=64.3,
            llava15_13b=67.7,
            table1_label="MMB",
            single_pred_prompt=True,
        ),
        Benchmark(
            name="mmbench_cn",
            title="MMBench-CN (dev)",
            question_file="mmbench_cn/mmbench_dev_cn_20231003.tsv",
            image_folder=None,
            answers_dir="mmbench_cn/answers/mmbench_dev_cn_20231003",
            runner=MMBENCH_RUNNER,
            prompt_suffix=MULTIPLE_CHOICE_SUFFIX_CN,
            scoring="server",
            converter=converters.mmbench_main,
            scorer=eval_mmbench.main,
            llava15_7b=58.3,
            llava15_13b=63.6,
            table1_label="MMB-CN",
            single_pred_prompt=True,
            lang="cn",
        ),
        Benchmark(
            name="seed",
            title="SEED-Bench (image)",
            question_file="seed_bench/llava-seed-bench.jsonl",
            image_folder="seed_bench",
            answers_dir="seed_bench/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=MULTIPLE_CHOICE_SUFFIX,
            scoring="local",
            converter=converters.seed_main,
            scorer=eval_seed.main,
            llava15_7b=58.6,
            llava15_13b=61.6,
            chunked=True,
        ),
        Benchmark(
            name="llavabench",
            title="LLaVA-Bench (in-the-wild)",
            question_file="llava-bench-in-the-wild/questions.jsonl",
            image_folder="llava-bench-in-the-wild/images",
            answers_dir="llava-bench-in-the-wild/answers",
            runner=FREEFORM_RUNNER,
            prompt_suffix="",
            scoring="gpt4",
            converter=None,
            scorer=judge.main,
            llava15_7b=65.4,
            llava15_13b=72.5,
        ),
        Benchmark(
            name="mmvet",
            title="MM-Vet",
            question_file="mm-vet/llava-mm-vet.jsonl",
            image_folder="mm-vet/images",
            answers_dir="mm-vet/answers",
            runner=FREEFORM_RUNNER,
            prompt_suffix="",
            scoring="gpt4",
            converter=converters.mmvet_main,
            scorer=None,
            llava15_7b=31.1,
            llava15_13b=36.1,
            table1_label="MM-Vet",
        ),
        Benchmark(
            name="ocrbench",
            title="OCRBench (final score of 1000)",
            question_file="ocrbench/llava_ocrbench.jsonl",
            image_folder="ocrbench/OCRBench_Images",
            answers_dir="ocrbench/answers",
            runner=LOADER_RUNNER,
            prompt_suffix="",
            scoring="local",
            converter=None,
            scorer=eval_ocrbench.main,
            llava15_7b=None,
            llava15_13b=None,
            builder=question_files.main,
        ),
        Benchmark(
            name="ai2d",
            title="AI2D (test)",
            question_file="ai2d/llava_ai2d_test.jsonl",
            image_folder="ai2d/images",
            answers_dir="ai2d/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=MULTIPLE_CHOICE_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_ai2d.main,
            llava15_7b=None,
            llava15_13b=None,
            builder=question_files.main,
        ),
        Benchmark(
            name="mmstar",
            title="MMStar (val)",
            question_file="mmstar/llava_mmstar.jsonl",
            image_folder="mmstar/images",
            answers_dir="mmstar/answers",
            runner=LOADER_RUNNER,
            prompt_suffix=question_files.MMSTAR_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_mmstar.main,
            llava15_7b=None,
            llava15_13b=None,
            builder=question_files.main,
        ),
        Benchmark(
            name="vqav2_val",
            title="VQAv2 (val, scored locally)",
            question_file="vqav2/llava_vqav2_mscoco_val2014.jsonl",
            image_folder="vqav2/val2014",
            answers_dir="vqav2/answers/llava_vqav2_mscoco_val2014",
            runner=LOADER_RUNNER,
            prompt_suffix=SHORT_ANSWER_SUFFIX,
            scoring="local",
            converter=None,
            scorer=eval_vqav2.main,
            llava15_7b=None,
            llava15_13b=None,
            chunked=True,
            builder=question_files.main,
        ),
    )
}

# Column order of the paper's Table 1.
TABLE1_COLUMNS: tuple[str, ...] = (
    "mmvet", "vizwiz", "sqa", "mmbench", "mmbench_cn", "mme", "vqav2", "textvqa", "gqa",
)  # fmt: skip


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


def merge_chunks(answers_dir: str | Path, num_chunks: int) -> Path:
    """Concatenate `{K}_{i}.jsonl` (i = 0..K-1, in index order) into `merge.jsonl`.

    The chunks' run records (`{K}_{i}.jsonl.meta.json`) must agree on every setting and be
    chunks 0..K-1 of K; `merge.jsonl.meta.json` gets their common record (`run_record.merge_records`).
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    answers_dir = Path(answers_dir)
    chunks = [answers_dir / f"{num_chunks}_{i}.jsonl" for i in range(num_chunks)]
    missing = [str(path) for path in chunks if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"missing answer chunks: {missing}")
    merged = answers_dir / "merge.jsonl"
    run_record.merge_records(chunks, merged)
    with merged.open("w", encoding="utf-8") as out:
        for path in chunks:
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                text += "\n"
            out.write(text)
    logger.info("merged %d chunks into %s", num_chunks, merged)
    return merged


def format_table(benchmarks: Sequence[Benchmark]) -> str:
    header = ("name", "title", "runner", "tokens", "chunked", "scoring", "7B", "13B", "question file")
    rows = [
        (
            b.name,
            b.title,
            b.runner.rsplit(".", 1)[-1],
            str(b.max_new_tokens),
            "yes" if b.chunked else "no",
            b.scoring,
            "-" if b.llava15_7b is None else f"{b.llava15_7b:g}",
            "-" if b.llava15_13b is None else f"{b.llava15_13b:g}",
            b.question_file,
        )
        for b in benchmarks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LLaVA-1.5 benchmark registry")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the benchmark table")
    merge = sub.add_parser("merge", help="concatenate {K}_{i}.jsonl chunks into merge.jsonl")
    merge.add_argument("--answers-dir", required=True)
    merge.add_argument("--num-chunks", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        print(format_table(list(BENCHMARKS.values())))
    else:
        print(merge_chunks(args.answers_dir, args.num_chunks))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
