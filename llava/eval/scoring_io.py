"""File helpers shared by the scorers and converters: JSONL/JSON reading with errors that name
the file, line and field, the small results JSON that `llava.eval.report` gathers, and the
coverage check every scorer runs (each expected question answered exactly once)."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PathLike = str | Path


def iter_numbered_jsonl(path: PathLike, skip_bad_lines: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) per non-empty line; a broken line raises (or is skipped and logged)."""
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
            yield line_no, record


def iter_jsonl(path: PathLike, skip_bad_lines: bool = False) -> Iterator[dict[str, Any]]:
    """Yield one object per non-empty line; a broken line raises (or is skipped and logged)."""
    return (record for _, record in iter_numbered_jsonl(path, skip_bad_lines))


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


def write_results_json(
    path: PathLike | None, benchmark: str, score: float | None, partial: str | None = None, **details: Any
) -> None:
    """Write `{"benchmark", "score", "partial", ...details}`: the layout `llava.eval.report` reads
    from `<results-dir>/<model>/<benchmark>.json`. `partial` is None when `score` is over the whole
    benchmark, else what it is over ("40 of 52 questions", "2 of 10 subtasks"); the report shows
    such a score as partial. No-op when `path` is None."""
    if path is None:
        return
    write_json(path, {"benchmark": benchmark, "score": score, "partial": partial, **details}, indent=2)
    logger.info("wrote %s results to %s", benchmark, path)


# ----------------------------------------------------------------------------------------------
# Coverage: every expected question answered exactly once, nothing else
# ----------------------------------------------------------------------------------------------

Key = Hashable
_EXAMPLES = 5


class CoverageError(ValueError):
    """The answers do not cover the questions one to one; the message names the counts."""


@dataclass(frozen=True)
class Coverage:
    """How a set of answers covers the expected questions.

    `missing`: expected keys without an answer; `extra`: answered keys that are not expected (another
    benchmark's or split's answers); `duplicated`: keys answered more than once, with their counts.
    """

    source: str
    expected: int
    answered: int
    missing: tuple[Key, ...] = ()
    extra: tuple[Key, ...] = ()
    duplicated: tuple[tuple[Key, int], ...] = ()

    @property
    def complete(self) -> bool:
        return not (self.missing or self.extra or self.duplicated)

    @property
    def partial(self) -> str | None:
        """None when every expected question is answered, else how many a score is over."""
        return f"{self.answered} of {self.expected} questions" if self.missing else None

    def describe(self) -> str:
        """One line: the counts, and a few example keys of each problem."""
        parts = [f"{self.answered} of {self.expected} expected question(s) answered"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {_examples(self.missing)})")
        if self.extra:
            parts.append(f"{len(self.extra)} extra, not among the questions (e.g. {_examples(self.extra)})")
        if self.duplicated:
            shown = ", ".join(f"{key!r} x{count}" for key, count in self.duplicated[:_EXAMPLES])
            parts.append(f"{len(self.duplicated)} answered more than once (e.g. {shown})")
        return f"{self.source}: " + "; ".join(parts)

    def as_dict(self) -> dict[str, int]:
        """The counts, for a results JSON."""
        return {
            "expected": self.expected,
            "answered": self.answered,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "duplicated": len(self.duplicated),
        }


def _examples(keys: Sequence[Key]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_EXAMPLES])
    return shown + (", ..." if len(keys) > _EXAMPLES else "")


def check_coverage(
    expected: Iterable[Key], answered: Iterable[Key], source: str, allow_missing: bool = False
) -> Coverage:
    """Compare the keys of the answers (in file order, repeats included) with the expected keys.

    A key listed n times in `expected` needs n answers (TextVQA asks a few questions twice about
    one image; every other benchmark lists each key once). Extra and duplicated answers are always
    an error (`CoverageError`): they belong to another file, or leave it open which answer counts.
    Missing answers are an error unless `allow_missing`; then they are logged with their counts and
    the caller scores the rest.
    """
    wanted = Counter(list(expected))  # a list: a mapping's keys, not its values, are the keys
    counts = Counter(list(answered))
    coverage = Coverage(
        source=source,
        expected=sum(wanted.values()),
        answered=sum(min(n, counts[key]) for key, n in wanted.items()),
        missing=tuple(key for key, n in wanted.items() if counts[key] < n),
        extra=tuple(key for key in counts if key not in wanted),
        duplicated=tuple((key, n) for key, n in counts.items() if key in wanted and n > wanted[key]),
    )
    if coverage.complete:
        return coverage
    if coverage.extra or coverage.duplicated or not allow_missing:
        only_missing = not (coverage.extra or coverage.duplicated)
        hint = "; pass --allow-missing to score only the answered ones" if only_missing else ""
        raise CoverageError(coverage.describe() + hint)
    logger.warning("%s; scoring the answered ones only (--allow-missing)", coverage.describe())
    return coverage


def index_answers(
    records: Sequence[Mapping[str, Any]],
    key: Callable[[Mapping[str, Any], str], Key],
    expected: Iterable[Key],
    source: str,
    allow_missing: bool = False,
) -> tuple[dict[Key, Mapping[str, Any]], Coverage]:
    """`{key: record}` for answers matched to the expected keys (each listed once), after
    `check_coverage`.

    `key(record, where)` gives a record's key (raising with `where`, e.g. "answers.jsonl: record 3",
    when a field is absent).
    """
    expected = list(expected)
    repeated = [k for k, n in Counter(expected).items() if n > 1]
    if repeated:
        raise ValueError(
            f"{source}: the questions list {len(repeated)} id(s) more than once, e.g. {_examples(repeated)}"
        )
    keys = [key(record, f"{source}: record {i}") for i, record in enumerate(records, start=1)]
    coverage = check_coverage(expected, keys, source, allow_missing=allow_missing)
    return dict(zip(keys, records, strict=True)), coverage


def add_coverage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score only the answered questions when some have no answer (the counts are printed "
        "and stored in --results-json); extra or duplicated answers stay an error",
    )


def print_coverage(coverage: Coverage) -> None:
    """The coverage line of a score table, printed only when answers are missing."""
    if not coverage.complete:
        print(f"INCOMPLETE: {coverage.describe()}")


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    """A scorer's `--results-json` and `--allow-missing`."""
    parser.add_argument("--results-json", default=None, help="headline numbers for llava.eval.report")
    add_coverage_argument(parser)


def report_scores(
    path: PathLike | None,
    benchmark: str,
    score: float | None,
    coverage: Coverage,
    partial: str | None = None,
    **details: Any,
) -> None:
    """Print the coverage line and write the results JSON: `details`, then the coverage counts.
    `partial`: what a score over part of the benchmark is over (default: the answered questions,
    when some are missing)."""
    print_coverage(coverage)
    partial = partial or coverage.partial
    write_results_json(path, benchmark, score, partial, **details, coverage=coverage.as_dict())


# ----------------------------------------------------------------------------------------------
# Appending to a JSONL file that a killed process may have left half-written
# ----------------------------------------------------------------------------------------------


def read_jsonl_for_append(path: PathLike) -> list[tuple[int, Any]]:
    """`(line number, value)` of every complete line of `path`, made ready for appending.

    A last line cut short by a kill is removed (logged), and a complete last line without its
    newline gets one, so the file stays valid JSONL. Any other broken line is an error naming the
    file and line. A missing file reads as empty.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    values: list[tuple[int, Any]] = []
    offset = 0
    for line_no, line in enumerate(lines, start=1):
        is_last = line_no == len(lines) or (line_no == len(lines) - 1 and lines[-1] == b"")
        if line.strip():
            try:
                values.append((line_no, json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                if not is_last:
                    raise ValueError(
                        f"{path}:{line_no}: not valid JSON ({err}); fix it or pass --overwrite"
                    ) from err
                logger.warning("%s:%d: removing a partial last line left by an interruption", path, line_no)
                with path.open("r+b") as f:
                    f.truncate(offset)
                return values
        offset += len(line) + 1
    if data and not data.endswith(b"\n"):
        with path.open("ab") as f:
            f.write(b"\n")
    return values
