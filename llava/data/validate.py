"""Check a LLaVA-format training set before spending GPU time on it.

    python -m llava.data.validate --data_path data.json --image_folder images/ \\
        [--tokenizer LLM --version v1 --vision_tower TOWER [--model_max_length 2048]]

Runs the checks the training dataset runs (`llava.data.checks`, the same functions) with
training's settings, and lists, by record index: malformed records, wrong `<image>` counts,
missing, unreadable and truncated images and decompression bombs and, with a tokenizer (loaded
as training loads it), conversations whose masking does not line up and samples longer than
`--model_max_length` (training's default, 2048, unless given; image positions counted), which
training skips and counts (or refuses under `--strict_data`). The positions an image occupies
come from `--vision_tower` as the model computes them (`--num_image_tokens` without a tower;
576, CLIP-L/14 at 336 px, when neither is given). Findings and the summary go to the log
(stderr). Exits with status 1 when it finds any, or when the data set holds no record.
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
from llava.data.preprocess import DEFAULT_MODEL_MAX_LENGTH, load_tokenizer
from llava.data.records import BadSampleError, load_records, record_images, record_name, structural_problem

logger = logging.getLogger(__name__)

DEFAULT_NUM_IMAGE_TOKENS = 576  # CLIP-L/14 at 336 px, LLaVA-1.5's tower


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
    num_image_tokens: int = DEFAULT_NUM_IMAGE_TOKENS,
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
    num_image_tokens: int = DEFAULT_NUM_IMAGE_TOKENS,
    records: list[dict] | None = None,
) -> list[Finding]:
    """Every problem of the data set, in record order (see `require_usable` for whether any
    record is left to train on: `main` applies it). `records`: the file's records, when the
    caller has read them already."""
    records = load_records(data_path) if records is None else records
    findings: list[Finding] = []
    for index, record in enumerate(tqdm(records, desc="validating", unit="record")):
        for kind, message in record_findings(
            record, image_folder, tokenizer, template, model_max_length, num_image_tokens
        ):
            findings.append(Finding(index, kind, message))
    return findings


def tower_image_tokens(vision_tower: str, select_feature: str = "patch") -> int:
    """Positions one image occupies with `vision_tower`, as the model config computes them
    (`num_image_tokens`): the tower's patches, plus its CLS position for `cls_patch`."""
    from llava.model.vision_tower import (
        check_select_feature,
        num_tower_patches,
        read_vision_config,
        tower_kind,
    )

    vision_config = read_vision_config(vision_tower)
    check_select_feature(vision_config, select_feature)
    cls = tower_kind(vision_config).cls_positions if select_feature == "cls_patch" else 0
    return num_tower_patches(vision_config) + cls


def _image_tokens(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Positions per image: from `--vision_tower`, else `--num_image_tokens`, else the default
    (logged); both given and disagreeing is an error."""
    if args.vision_tower is None:
        if args.num_image_tokens is None:
            logger.warning(
                "no --vision_tower: counting %d positions per image (CLIP-L/14 at 336 px); give the "
                "training run's --vision_tower (or --num_image_tokens) for its count",
                DEFAULT_NUM_IMAGE_TOKENS,
            )
            return DEFAULT_NUM_IMAGE_TOKENS
        return args.num_image_tokens
    derived = tower_image_tokens(args.vision_tower, args.mm_vision_select_feature)
    if args.num_image_tokens is not None and args.num_image_tokens != derived:
        parser.error(
            f"--num_image_tokens {args.num_image_tokens} disagrees with --vision_tower {args.vision_tower} "
            f"({derived} positions per image with --mm_vision_select_feature {args.mm_vision_select_feature})"
        )
    logger.info("%d positions per image (from --vision_tower %s)", derived, args.vision_tower)
    return derived


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--image_folder", default=None)
    parser.add_argument("--tokenizer", default=None, help="the LLM's folder, to check masking and lengths")
    parser.add_argument("--version", default="v1", help="conversation template")
    parser.add_argument(
        "--model_max_length",
        type=int,
        default=None,
        help=f"positions, images included (with --tokenizer; default: training's, {DEFAULT_MODEL_MAX_LENGTH})",
    )
    parser.add_argument("--vision_tower", default=None, help="the training run's tower: positions per image")
    parser.add_argument("--mm_vision_select_feature", default="patch", help="patch (default) or cls_patch")
    parser.add_argument(
        "--num_image_tokens",
        type=int,
        default=None,
        help=f"positions per image without --vision_tower (default {DEFAULT_NUM_IMAGE_TOKENS}: CLIP-L/14 at 336 px)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tokenizer, max_length = None, None
    if args.tokenizer is not None:
        max_length = DEFAULT_MODEL_MAX_LENGTH if args.model_max_length is None else args.model_max_length
        tokenizer = load_tokenizer(args.tokenizer, max_length)
    elif args.model_max_length is not None:
        parser.error("--model_max_length needs --tokenizer")
    num_image_tokens = _image_tokens(parser, args)
    try:
        records = load_records(args.data_path)
    except (FileNotFoundError, ValueError) as err:  # missing, not UTF-8, not JSON: named by the message
        logger.error("%s", err)
        return 1
    findings = validate(
        args.data_path, args.image_folder, tokenizer, args.version, max_length, num_image_tokens, records
    )
    for finding in findings:
        logger.error(
            "%s: %s: %s", record_name(records[finding.index], finding.index), finding.kind, finding.message
        )
    bad = len({f.index for f in findings})
    summary = f"{args.data_path}: {len(records)} records, {bad} with problems ({len(findings)} findings)"
    (logger.error if findings else logger.info)("%s", summary)
    try:
        require_usable(args.data_path, len(records), len(records) - bad)
    except EmptyDatasetError as err:
        logger.error("%s", err)
        return 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
