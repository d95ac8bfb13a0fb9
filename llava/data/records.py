"""LLaVA's JSON conversation records: loading, structural checks and conversation building.

A record is `{"id": ..., "image": "a.jpg" | ["a.jpg", "b.jpg"] (optional), "conversations":
[{"from": "human", "value": "<image>\\nWhat is ...?"}, {"from": "gpt", "value": "..."}, ...]}`.
Format: https://github.com/haotian-liu/LLaVA/blob/main/docs/Finetune_Custom_Data.md
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, SeparatorStyle, get_conv_template

ROLES = ("human", "gpt")


class BadSampleError(ValueError):
    """A record that cannot be trained on, and why (`kind`, one of `llava.data.checks.KINDS`)."""

    def __init__(self, message: str, kind: str = "malformed"):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keeps `kind` across DataLoader worker processes
        return type(self), (str(self), self.kind)


def read_utf8(path: Path) -> str:
    """The text of `path` (UTF-8, an optional byte-order mark dropped).

    Raises:
        ValueError: the file is not UTF-8; names the file, the line and the byte offset.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {raw[err.start : err.start + 1]!r} at offset {err.start}: "
            f"{err.reason}); LLaVA data files are UTF-8 JSON"
        ) from None


def load_records(data_path: str | os.PathLike) -> list[Any]:
    """The records of a LLaVA JSON file (a list), or of a JSON-lines file (one record a line).

    Raises `FileNotFoundError` or `ValueError` naming the file (and the line where known) for a
    missing file, non-UTF-8 bytes, invalid JSON or a JSON value that is not a list.
    """
    path = Path(data_path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    text = read_utf8(path)
    if path.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: invalid JSON: {err}") from err
        return records
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def record_images(record: dict) -> list[str]:
    """The record's image file names (an `image` string or list; none for a text-only record)."""
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


def record_name(record: Any, index: int) -> str:
    record_id = record.get("id") if isinstance(record, dict) else None
    return f"record {index}" + (f" (id {record_id!r})" if record_id is not None else "")


def structural_problem(record: Any) -> str | None:
    """Why `record` is malformed (fields, roles, `<image>` count), or None when it is well formed."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    image = record.get("image")
    if image is not None:
        if isinstance(image, list):
            if not image or not all(isinstance(name, str) and name for name in image):
                return "field 'image' must be a file name or a non-empty list of file names"
        elif not isinstance(image, str) or not image:
            return "field 'image' must be a file name or a non-empty list of file names"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "field 'conversations' must be a non-empty list of turns"
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return f"conversations[{t}] must be an object with a string 'value'"
        if turn.get("from") != ROLES[t % 2]:
            return f"conversations[{t}] is from {turn.get('from')!r}, expected {ROLES[t % 2]!r} (turns alternate, human first)"
    if len(turns) % 2:
        return "the conversation ends with a human turn (nothing to learn from it)"
    placeholders = sum(turn["value"].count(DEFAULT_IMAGE_TOKEN) for turn in turns)
    n_images = len(record_images(record))
    if placeholders != n_images:
        return f"{placeholders} '{DEFAULT_IMAGE_TOKEN}' placeholder(s) in the conversation but {n_images} image(s)"
    return None


def build_conversation(record: dict, template: str) -> Conversation:
    """The record's turns in the template `template`.

    With `plain` (LLaVA stage 1) the prompt is the image alone and the answer the caption. With
    the chat templates, a turn holding one `<image>` gets it moved to the front
    (`<image>\\n` + text), the form LLaVA trains and evaluates with.
    """
    conv = get_conv_template(template)
    turns = record["conversations"]
    if conv.sep_style is SeparatorStyle.PLAIN:
        if len(turns) != 2:
            raise BadSampleError(f"the 'plain' template takes one human/gpt pair, got {len(turns)} turns")
        n_images = len(record_images(record))
        if n_images == 0:
            raise BadSampleError("the 'plain' template needs an image")
        conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN * n_images)
        conv.append_message(conv.roles[1], turns[1]["value"])
        return conv
    for t, turn in enumerate(turns):
        value = turn["value"]
        if value.count(DEFAULT_IMAGE_TOKEN) == 1 and t % 2 == 0:
            value = DEFAULT_IMAGE_TOKEN + "\n" + value.replace(DEFAULT_IMAGE_TOKEN, "").strip()
        conv.append_message(conv.roles[t % 2], value)
    return conv


def word_length(record: dict) -> int:
    """A cheap length estimate (words in the conversation), as LLaVA's length grouping uses."""
    return sum(len(turn["value"].split()) for turn in record["conversations"])
