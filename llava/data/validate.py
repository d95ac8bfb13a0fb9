"""Check a LLaVA-format training set before spending GPU time on it.

    python -m llava.data.validate --data_path data.json --image_folder images/ \\
        [--tokenizer LLM --version v1 --model_max_length 2048 --num_image_tokens 576]

Lists, by record index: malformed records, wrong `<image>` counts, missing, unreadable and
truncated images and, with a tokenizer, conversations whose masking does not line up and samples
longer than `--model_max_length` (image positions counted). Exits with status 1 when it finds any.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

from PIL import Image
from tqdm import tqdm

from llava.data.preprocess import check_masking, effective_length
from llava.data.records import (
    BadSampleError,
    build_conversation,
    load_records,
    record_images,
    record_name,
    structural_problem,
)
from llava.mm_utils import tokenize_conversation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    index: int
    kind: str  # malformed | missing_image | unreadable_image | masking | too_long
    message: str


def image_problem(path: str) -> tuple[str, str] | None:
    """`(kind, message)` for a missing, unreadable or truncated image; None when it decodes fully."""
    if not os.path.isfile(path):
        return "missing_image", f"image file not found: {path}"
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: a truncated file fails here
    except (OSError, SyntaxError, ValueError) as err:
        return "unreadable_image", f"cannot read image {path}: {err}"
    return None


def validate(
    data_path: str,
    image_folder: str | None = None,
    tokenizer=None,
    template: str = "v1",
    model_max_length: int | None = None,
    num_image_tokens: int = 576,
) -> list[Finding]:
    """Every problem of the data set, in record order."""
    records = load_records(data_path)
    findings: list[Finding] = []
    for index, record in enumerate(tqdm(records, desc="validating", unit="record")):
        problem = structural_problem(record)
        if problem is not None:
            findings.append(Finding(index, "malformed", problem))
            continue
        for name in record_images(record):
            found = image_problem(os.path.join(image_folder, name) if image_folder else name)
            if found is not None:
                findings.append(Finding(index, *found))
        if tokenizer is None:
            continue
        try:
            conv = build_conversation(record, template)
            input_ids, labels = tokenize_conversation(conv, tokenizer)
            check_masking(conv, input_ids, labels, tokenizer)
        except (BadSampleError, ValueError) as err:
            findings.append(Finding(index, "masking", str(err)))
            continue
        length = effective_length(input_ids, num_image_tokens)
        if model_max_length is not None and length > model_max_length:
            findings.append(
                Finding(
                    index,
                    "too_long",
                    f"{length} positions (images expanded) > model_max_length {model_max_length}",
                )
            )
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
    findings = validate(
        args.data_path,
        args.image_folder,
        tokenizer,
        args.version,
        args.model_max_length,
        args.num_image_tokens,
    )
    records = load_records(args.data_path)
    for finding in findings:
        print(f"{record_name(records[finding.index], finding.index)}: {finding.kind}: {finding.message}")
    bad = len({f.index for f in findings})
    print(f"{args.data_path}: {len(records)} records, {bad} with problems ({len(findings)} findings)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
