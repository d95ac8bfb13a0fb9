"""Where a model, LLM or vision tower comes from: a local folder or a hub repository id.

One rule for every place a checkpoint location is given (`--model-path`, `--model-base`,
`--model_name_or_path`, `--vision_tower`, a config's `mm_vision_tower`):

- a string that exists on disk is local (`~` expanded);
- a string that looks like a path (starts with `/`, `.` or `~`, has more than one separator,
  or its first component exists on disk) but does not exist raises `FileNotFoundError` naming it;
- only a well-formed `org/name` id whose `org` is not a local folder goes to the hub.

A typo in a local path therefore names the path, instead of a hub error about repository ids,
and a relative path is never tried on the hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_location(value: str | os.PathLike, what: str) -> str:
    """`value` as an existing local folder, or unchanged when it is a hub id (`org/name`).

    Args:
        value: the location as the user gave it.
        what: the flag or field it came from, for the error message (e.g. `--vision_tower`).

    Raises:
        FileNotFoundError: `value` is meant as a local path and does not exist.
        NotADirectoryError: `value` exists but is a file.
    """
    text = os.fspath(value)
    local = Path(text).expanduser()
    if local.is_dir():
        return str(local)
    if local.exists():
        raise NotADirectoryError(f"{what} {text}: expected a folder (a checkpoint), found a file")
    if is_hub_id(text):
        return text
    raise FileNotFoundError(f"{what} {text}: no such folder ({local.absolute()})")


def is_hub_id(text: str) -> bool:
    """True for an `org/name` string that cannot be meant as a local path."""
    if not _HUB_ID.match(text):
        return False
    return not Path(text.split("/", 1)[0]).exists()
