"""The playground's one stage cache, for the data, the backbones and the pipelines. A stage owns
a folder: `STAGE` is written into it first, `DONE.json` (the stage's record and its `settings`,
as JSON) last and atomically. A re-run returns the record of a finished stage with the same
settings, refuses one finished with other settings, removes a folder with `STAGE` but no
`DONE.json` (an interrupted stage) before running the stage again, and refuses to touch a
non-empty folder with neither.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STARTED, DONE = "STAGE", "DONE.json"


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists), so that settings compare equal."""
    return json.loads(json.dumps(value))


def read_record(directory: Path) -> dict | None:
    """The record of the finished stage in `directory`, or None when it is not finished."""
    marker = directory / DONE
    try:
        return json.loads(marker.read_text()) if marker.is_file() else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{marker}: not valid JSON ({err}); delete its folder to rerun the stage") from err


def run_stage(directory: Path, describe: str, work: Callable[[Path], dict], settings: Any) -> dict:
    """Run `work(directory)` unless `directory` holds a stage finished with the same `settings`;
    return the stage's record (`work`'s dict plus `wall_time_s` and `settings`).

    Raises `FileExistsError` naming `directory` when it holds a stage finished with other settings
    or files that are not a stage's.
    """
    settings = as_json(settings)
    record = read_record(directory)
    if record is not None:
        if record.get("settings") != settings:
            raise FileExistsError(
                f"{directory} holds a stage run with other settings ({record.get('settings')}); wanted "
                f"{settings}. Use another --output-dir or delete it."
            )
        logger.info("%s: done earlier (%.0f s), skipped", describe, record["wall_time_s"])
        return record
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / STARTED).is_file():
            raise FileExistsError(
                f"{directory} is not empty and holds no playground stage; refusing to write there"
            )
        logger.info("%s: removing the output of an interrupted run", describe)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STARTED).touch()
    start = time.perf_counter()
    record = work(directory)
    record["wall_time_s"] = time.perf_counter() - start
    record["settings"] = settings
    partial = directory / (DONE + ".tmp")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, directory / DONE)
    logger.info("%s: finished in %.0f s", describe, record["wall_time_s"])
    return record
