"""Check a LLaVA-format training set before spending GPU time on it.

    python -m llava.data.validate --data_path data.json --image_folder images/ \\
        [--tokenizer LLM --version v1 --model_max_length 2048 --num_image_tokens 576]

Runs the checks the training dataset runs (`llava.data.checks`, the same functions) and lists,
by record index: malformed records, wrong `<image>` counts, missing, unreadable and truncated
images and decompression bombs and, with a tokenizer, conversations whose masking does not line
up and samples longer than `--model_max_length` (image positions counted), which training skips
and counts (or refuses under `--strict_data`). Exits with status 1 when it finds any, or when the
data set holds no record.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

from tqdm import tqdm

from llava.data.checks import (
    EmptyDatasetError,
    image_path,
    load_checked_image,
    require_usable,
    tokenize_record,
)
from llava.data.records import BadSampleError, load_records, record_images, record_name, structural_problem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    index: int
    kind: str  # one of llava.data.checks.KINDS
    message: str


def record_findings(
    record,
    image_folder: str | None,
    tokenizer=None,
    template: str = "v1",
    model_max_length: int | None = None,
    num_image_tokens: int = 576,
) -> list[tuple[str, str]]:
    """`(kind, message)` of every problem of one record (empty when training would use it).

    The checks are the training dataset's (`llava.data.checks`); where the dataset stops at a
    record's first problem, this lists them all (each image, then the conversation).
    """
    problem = structural_problem(record)
    if problem is not None:
        return [("malformed", problem)]
    found = []
    for name in record_images(record):
        try:
            load_checked_image(image_path(name, image_folder))
        except BadSampleError as err:
            found.append((err.kind, str(err)))
    if tokenizer is not None:
        try:
            tokenize_record(record, template, tokenizer, model_max_length, num_image_tokens)
        except BadSampleError as err:
            found.append((err.kind, str(err)))
    return found


def validate(
    data_path: str,
    image_folder: str | None = None,
    tokenizer=None,
    template: str = "v1",
    model_max_length: int | None = None,
    num_image_tokens: int = 576,
) -> list[Finding]:
    """Every problem of the data set, in record order (see `require_usable` for whether any
    record is left to train on: `main` applies it)."""
    records = load_records(data_path)
    findings: list[Finding] = []
    for index, record in enumerate(tqdm(records, desc="validating", unit="record")):
        for kind, message in record_findings(
            record, image_folder, tokenizer, template, model_max_length, num_image_tokens
        ):
            findings.append(Finding(index, kind, message))
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--image_folder", default=None)
    parser.add_argument("--tokenizer", default=None, help="the LLM's folder, to check masking and lengths")
    parser.add_argument("--version", default="v1", help="conversation template")
    parser.add_argument("--model_max_length", type=int, default=None)
    parser.add_argument(
        "--num_image_tokens", type=int, default=576, help="positions per image (576: CLIP-L/336)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tokenizer = None
    if args.tokenizer is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    elif args.model_max_length is not None:
        parser.error("--model_max_length needs --tokenizer")
    try:
        records = load_records(args.data_path)
    except (FileNotFoundError, ValueError) as err:  # missing, not UTF-8, not JSON: named by the message
        print(f"error: {err}")
        return 1
    findings = validate(
        args.data_path,
        args.image_folder,
        tokenizer,
        args.version,
        args.model_max_length,
        args.num_image_tokens,
    )
    for finding in findings:
        print(f"{record_name(records[finding.index], finding.index)}: {finding.kind}: {finding.message}")
    bad = len({f.index for f in findings})
    print(f"{args.data_path}: {len(records)} records, {bad} with problems ({len(findings)} findings)")
    try:
        require_usable(args.data_path, len(records), len(records) - bad)
    except EmptyDatasetError as err:
        print(f"error: {err}")
        return 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
