"""File helpers shared by the scorers and converters: JSONL/JSON reading with errors that name
the file, line and field, and the small results JSON that `llava.eval.report` gathers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PathLike = str | Path


def iter_jsonl(path: PathLike, skip_bad_lines: bool = False) -> Iterator[dict[str, Any]]:
    """Yield one object per non-empty line; a broken line raises (or is skipped and logged)."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if not skip_bad_lines:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err
                logger.warning("%s:%d: skipping a line that is not valid JSON", path, line_no)
                continue
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield record


def read_jsonl(path: PathLike, skip_bad_lines: bool = False) -> list[dict[str, Any]]:
    return list(iter_jsonl(path, skip_bad_lines=skip_bad_lines))


def read_json(path: PathLike) -> Any:
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def write_json(path: PathLike, obj: Any, indent: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
    return path


def write_jsonl(path: PathLike, records: list[Mapping[str, Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def field(record: Mapping[str, Any], name: str, where: str) -> Any:
    """`record[name]`, or a ValueError naming the file/record (`where`) and the missing field."""
    try:
        return record[name]
    except KeyError:
        raise ValueError(f"{where}: missing field {name!r} (has {sorted(record)})") from None


def write_results_json(path: PathLike | None, benchmark: str, score: float | None, **details: Any) -> None:
    """Write `{"benchmark", "score", ...details}`: the layout `llava.eval.report` reads from
    `<results-dir>/<model>/<benchmark>.json`. No-op when `path` is None."""
    if path is None:
        return
    write_json(path, {"benchmark": benchmark, "score": score, **details}, indent=2)
    logger.info("wrote %s results to %s", benchmark, path)
