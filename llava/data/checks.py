"""The checks a training sample must pass: one set, called by both the training dataset
(`llava.data.dataset.LazySupervisedDataset`) and the validator (`python -m llava.data.validate`),
so that the two agree on every record.

| kind               | the record                                                           |
|--------------------|----------------------------------------------------------------------|
| `malformed`        | fields, roles, `<image>` count, or a template it does not fit        |
| `missing_image`    | names an image file that does not exist                              |
| `unreadable_image` | has an image that does not decode in full: truncated, not an image, over Pillow's decompression-bomb limit, no 8-bit form |
| `masking`          | its supervised tokens are not exactly the assistant replies          |
| `too_long`         | is longer than `model_max_length` (images expanded): a reply would be cut |

A failed check raises `BadSampleError` with its `kind`. The validator lists every finding and
exits with status 1; the dataset skips the record and counts it, or stops naming the file and
the record under `--strict_data`. A data set with no record, or none left once the bad ones are
skipped, is an error for both (`EmptyDatasetError`).
"""

from __future__ import annotations

import os

from PIL import Image

from llava.data.preprocess import tokenize_sample
from llava.data.records import BadSampleError, build_conversation, record_images, structural_problem
from llava.mm_utils import load_image

KINDS = ("malformed", "missing_image", "unreadable_image", "masking", "too_long")


class EmptyDatasetError(ValueError):
    """A data set with nothing to train on."""


def image_path(name: str, image_folder: str | None) -> str:
    return os.path.join(image_folder, name) if image_folder else name


def check_structure(record, image_folder: str | None) -> None:
    """The cheap checks (no decoding, no tokenising): well-formed, and every image file exists."""
    problem = structural_problem(record)
    if problem is not None:
        raise BadSampleError(problem, kind="malformed")
    for name in record_images(record):
        path = image_path(name, image_folder)
        if not os.path.isfile(path):
            raise BadSampleError(f"image file not found: {path}", kind="missing_image")


def load_checked_image(path: str) -> Image.Image:
    """The image at `path` as 8-bit RGB (`llava.mm_utils.load_image`); raises `BadSampleError`."""
    try:
        return load_image(path)
    except FileNotFoundError as err:
        raise BadSampleError(str(err), kind="missing_image") from err
    except OSError as err:
        raise BadSampleError(str(err), kind="unreadable_image") from err


def tokenize_record(
    record: dict, template: str, tokenizer, model_max_length: int | None, num_image_tokens: int
) -> tuple[list[int], list[int]]:
    """Ids and labels of a well-formed record: template fit, masking and length checked."""
    conv = build_conversation(record, template)
    return tokenize_sample(conv, tokenizer, model_max_length, num_image_tokens)


def require_usable(data_path: str, total: int, usable: int) -> None:
    """Raise `EmptyDatasetError` unless at least one record is usable."""
    if total == 0:
        raise EmptyDatasetError(f"{data_path}: the data set holds no records")
    if usable == 0:
        raise EmptyDatasetError(f"{data_path}: none of its {total} record(s) is usable")
