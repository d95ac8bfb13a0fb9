"""The run record: what produced an answers file, kept beside it as `<answers file>.meta.json`.

The answer runner writes it before its first answer and compares it on every resume, so answers
of two different runs never end up in one file. `llava.eval.benchmarks.merge_chunks` merges the
chunks' records into the record of `merge.jsonl`, and the scorers and converters that are given
the question file check that the answers were made from it (the same content, by SHA-256), so
another benchmark's answers are refused even when their question ids collide.

A record (JSON, stdlib only, no model needed to read it):

    {"format": "llava-eval-run/1", "runner": "llava.eval.model_vqa_loader", "model_id": "ckpt",
     "model_path": "/abs/ckpt", "model_base": null, "image_folder": "/abs/images",
     "fingerprints": {"model_path": "sha256:...", "model_base": null, "image_folder": "sha256:..."},
     "conv_mode": "vicuna_v1", "dtype": "auto",
     "decoding": {"temperature": 0.0, "top_p": null, "num_beams": 1, "max_new_tokens": 128},
     "prompt": {"single_pred_prompt": false},
     "question_file": {"path": "/abs/questions.jsonl", "sha256": "..."},
     "chunk": {"num_chunks": 1, "chunk_idx": 0}}

The model, its base and the image folder are compared by content, never by path: `fingerprints`
holds `llava.model.fingerprint.location_fingerprint` of `--model-path` and `--model-base` (a
checkpoint retrained in place gets another one) and `image_files_fingerprint` of the image
files the chunk reads; the question file is compared by its SHA-256. The paths are kept for the
messages only, so a moved checkpoint or data folder resumes.

`prompt` also holds the runner's own options (MMBench: `all_rounds`, `lang`). Answers files
without a record (written by LLaVA's own code, say) are still scored; then only the coverage of
the question ids is checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.model.fingerprint import file_sha256, location_fingerprint

logger = logging.getLogger(__name__)

FORMAT = "llava-eval-run/1"
# The answer runners (module names), as recorded in `runner`.
LOADER_RUNNER = "llava.eval.model_vqa_loader"
FREEFORM_RUNNER = "llava.eval.model_vqa"
SCIENCE_RUNNER = "llava.eval.model_vqa_science"
MMBENCH_RUNNER = "llava.eval.model_vqa_mmbench"
RECORD_SUFFIX = ".meta.json"
# Settings that may differ between two runs writing one answers file: none of them changes an
# answer (the format tag, the name derived from the model path, where the question file, the
# model and the images lie: their content is compared through the SHA-256 and `fingerprints`).
_NOT_COMPARED = frozenset(
    {"format", "model_id", "question_file.path", "model_path", "model_base", "image_folder"}
)
# A fingerprint that differs, and the location setting the message names with it.
_LOCATIONS = {f"fingerprints.{name}": name for name in ("model_path", "model_base", "image_folder")}
PathLike = str | os.PathLike


def record_path(answers_file: PathLike) -> Path:
    """`<answers file>.meta.json`, beside the answers file."""
    answers_file = Path(answers_file)
    return answers_file.with_name(answers_file.name + RECORD_SUFFIX)


def question_file_identity(path: PathLike) -> dict[str, str]:
    """`{"path", "sha256"}` of a question file, its path made absolute."""
    return {"path": os.path.abspath(os.path.expanduser(path)), "sha256": file_sha256(path)}


def local_path_or_id(path: str | None) -> str | None:
    """An existing local path made absolute; anything else (a hub id, None) as given."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    return os.path.abspath(expanded) if os.path.exists(expanded) else path


def image_files_fingerprint(folder: PathLike | None, paths: Iterable[PathLike]) -> str | None:
    """`sha256:...` of each distinct image file's path relative to `folder` and its size (or
    "missing"): one `stat` a file, no image read. Moving the folder keeps it; another or a
    resized image changes it; files the questions do not read (answers written under the data
    folder, say) do not count. None when no file is read (images held in the question file)."""
    root = os.path.abspath(os.path.expanduser(folder or "."))
    entries = set()
    for path in paths:
        relative = os.path.relpath(os.path.abspath(os.path.expanduser(path)), root)
        size = os.stat(path).st_size if os.path.isfile(path) else "missing"
        entries.add(f"{Path(relative).as_posix()}:{size}")
    if not entries:
        return None
    return "sha256:" + hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def locations(
    model_path: str,
    model_base: str | None,
    image_folder: str | None,
    image_paths: Iterable[PathLike] = (),
) -> dict[str, Any]:
    """The record's `model_path`, `model_base`, `image_folder` (absolute when local) and the
    content `fingerprints` that resume compares instead of the paths: of the model, its base and
    the image files `image_paths` (those the run reads, under `image_folder`)."""
    return {
        "model_path": local_path_or_id(model_path),
        "model_base": local_path_or_id(model_base),
        "image_folder": local_path_or_id(image_folder) if image_folder else image_folder,
        "fingerprints": {
            "model_path": location_fingerprint(model_path),
            "model_base": location_fingerprint(model_base),
            "image_folder": image_files_fingerprint(image_folder, image_paths),
        },
    }


def read_record(answers_file: PathLike, fmt: str = FORMAT) -> dict[str, Any] | None:
    """The record (of format `fmt`) beside `answers_file`, or None when there is none."""
    path = record_path(answers_file)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: run record is not valid JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise ValueError(f"{path}: not a run record of format {fmt!r}")
    return record


def write_record(answers_file: PathLike, record: Mapping[str, Any]) -> Path:
    """Write the record atomically (a temporary file renamed into place)."""
    path = record_path(answers_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"decoding.temperature": 0.0, ...}`: nested settings under dotted names."""
    flat: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = _NOT_COMPARED
) -> list[tuple[str, Any, Any]]:
    """`(setting, old value, new value)` for every compared setting that differs."""
    old_flat, new_flat = flatten(old), flatten(new)
    skipped = set(ignore)
    names = [n for n in dict.fromkeys([*old_flat, *new_flat]) if n not in skipped]
    return [(n, old_flat.get(n), new_flat.get(n)) for n in names if old_flat.get(n) != new_flat.get(n)]


def check_resume(
    output: PathLike,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    ignore: Iterable[str] = (),
    flag: str = "--answers-file",
) -> None:
    """Refuse to add results of run `new` to a file written by run `old`, naming each setting
    that differs with its recorded and its current value."""
    changed = differences(old, new, ignore={*_NOT_COMPARED, *ignore})
    if changed:
        lines = "\n".join(_describe_change(old, new, *change) for change in changed)
        raise ValueError(
            f"{output} was written by another run ({record_path(output).name}):\n{lines}\n"
            f"pass --overwrite to start it afresh, or choose another {flag}"
        )


def _describe_change(
    old: Mapping[str, Any], new: Mapping[str, Any], name: str, before: Any, after: Any
) -> str:
    """One line of the refusal; a changed fingerprint also names both locations."""
    line = f"  {name}: {before!r} in the file, {after!r} now"
    location = _LOCATIONS.get(name)
    if location is not None:
        line += f" (other content: {old.get(location)!r} then, {new.get(location)!r} now)"
    return line


def check_question_file(
    answers_file: PathLike, question_file: PathLike | None, runners: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The answers file's record, after checking that it was made from `question_file` (same
    SHA-256) by one of `runners` (when given). An answers file without a record passes (logged):
    then only the coverage of the ids can be checked."""
    record = read_record(answers_file)
    if record is None:
        logger.info("%s has no run record (%s); checking id coverage only", answers_file, RECORD_SUFFIX)
        return None
    source = record_path(answers_file)
    if runners and record.get("runner") not in runners:
        raise ValueError(
            f"{answers_file} was written by {record.get('runner')!r} ({source.name}), "
            f"but this scorer reads answers of {' or '.join(map(repr, runners))}"
        )
    if question_file is not None:
        recorded = record.get("question_file") or {}
        actual = file_sha256(question_file)
        if recorded.get("sha256") != actual:
            raise ValueError(
                f"{answers_file} answers the questions of {recorded.get('path')!r} "
                f"(sha256 {str(recorded.get('sha256'))[:12]}), not those of {os.fspath(question_file)!r} "
                f"(sha256 {actual[:12]}): another benchmark's or split's answers; score them with "
                "their own question file"
            )
    return record


def merge_records(chunks: Sequence[Path], merged: Path) -> dict[str, Any] | None:
    """The record of the concatenation of `chunks` (answer files `{K}_{i}.jsonl`, in order).

    Every chunk must have a record; they must agree on everything but `chunk`, and chunk i must be
    chunk i of K. None (nothing written) when no chunk has a record; a mix is an error.
    """
    found = {path: read_record(path) for path in chunks}
    without = [str(path) for path, record in found.items() if record is None]
    if len(without) == len(chunks):
        logger.info("the chunks have no run records; %s gets none", merged)
        record_path(merged).unlink(missing_ok=True)
        return None
    if without:
        raise ValueError(f"answer chunks without a run record ({RECORD_SUFFIX}): {without}")
    records = [(path, record) for path, record in found.items() if record is not None]
    first_path, first = records[0]
    for i, (path, record) in enumerate(records):
        chunk = record.get("chunk") or {}
        if (chunk.get("num_chunks"), chunk.get("chunk_idx")) != (len(chunks), i):
            raise ValueError(
                f"{record_path(path)}: chunk {chunk.get('chunk_idx')} of {chunk.get('num_chunks')}, "
                f"expected chunk {i} of {len(chunks)}"
            )
        # Each chunk reads its own images, so their fingerprints differ.
        ignore = {*_NOT_COMPARED, "chunk.chunk_idx", "fingerprints.image_folder"}
        changed = differences(first, record, ignore=ignore)
        if changed:
            name, before, after = changed[0]
            raise ValueError(
                f"answer chunks of different runs: {name} is {before!r} in {record_path(first_path)} "
                f"but {after!r} in {record_path(path)}"
            )
    merged_record = {
        **first,
        "fingerprints": {**first.get("fingerprints", {}), "image_folder": None},  # per chunk, above
        "chunk": {"num_chunks": len(chunks), "merged_from": [p.name for p in chunks]},
    }
    write_record(merged, merged_record)
    return merged_record
