"""Checkpoint formats: one module per format, one ordered registry (`FORMATS`), one dispatcher.

What a folder is, is decided from its own files, never from its name (nor from `model_name` or
config.json's `architectures`); exactly one format must claim it:

| format (module)                        | what its `detect` looks for                                   |
|----------------------------------------|---------------------------------------------------------------|
| `own` (`own.py`)                       | config.json of this project's models (with `vision_config`) or of a text-only LLM |
| `llava-1.5` (`llava15.py`)             | flat config.json, `"model_type": "llava"` / `"llava_llama"`, no `vision_config` |
| `llava-hf` (`llava_hf.py`)             | config.json with `text_config`, `"model_type": "llava"`       |
| `first-release` (`first_release.py`)   | flat `fusion_llama` config.json with the release's own fields |
| `authors-bundle` (`authors_bundle.py`) | `inverse_llava_config.json` (the authors' 2026 bundle)        |

Within the first four, the files beside the config say which kind of folder it is (complete,
LoRA run, stage-1 projector: `llava.model.formats.kinds`). docs/checkpoints.md describes every
format and how to add one: a module with `detect`, `load` and a `FORMAT`, and one line in
`FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from llava.cli_errors import UserError
from llava.model.formats import authors_bundle, first_release, llava15, llava_hf, own
from llava.model.formats.base import CheckpointFormat, Loaded, LoadOptions, ModelBaseError

__all__ = [
    "FORMATS",
    "AmbiguousFormatError",
    "CheckpointFormat",
    "LoadOptions",
    "Loaded",
    "ModelBaseError",
    "UnknownFormatError",
    "detect_format",
    "load_checkpoint",
]

# Every format this project reads, in the order the errors list them. A new format is one line here.
FORMATS: tuple[CheckpointFormat, ...] = (
    own.FORMAT,
    llava15.FORMAT,
    llava_hf.FORMAT,
    first_release.FORMAT,
    authors_bundle.FORMAT,
)

_LISTED_FILES = 12


class UnknownFormatError(UserError, FileNotFoundError):
    """No format claims a folder (not a checkpoint, or one whose config.json is missing)."""


class AmbiguousFormatError(UserError, ValueError):
    """More than one format claims a folder: its files mix two formats."""


def _holdings(folder: Path) -> str:
    names = sorted(item.name + ("/" if item.is_dir() else "") for item in folder.iterdir())
    if not names:
        return "nothing (an empty folder)"
    more = f" and {len(names) - _LISTED_FILES} more" if len(names) > _LISTED_FILES else ""
    return ", ".join(names[:_LISTED_FILES]) + more


def detect_format(folder: str | Path) -> CheckpointFormat:
    """The one format of `FORMATS` that claims `folder` (a local folder).

    Raises:
        UnknownFormatError: no format claims it; names the folder, what it holds and what each
            format looks for.
        AmbiguousFormatError: several do; names the folder, the formats and what each looks for.
        NotADirectoryError: `folder` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: expected a checkpoint folder")
    claims = [candidate for candidate in FORMATS if candidate.detect(folder)]
    if len(claims) == 1:
        return claims[0]
    looked_for = "; ".join(f"{candidate.name}: {candidate.looks_for}" for candidate in claims or FORMATS)
    if not claims:
        raise UnknownFormatError(
            f"{folder}: no checkpoint format recognises this folder; it holds {_holdings(folder)}. "
            f"Looked for: {looked_for}"
        )
    raise AmbiguousFormatError(
        f"{folder}: {len(claims)} checkpoint formats claim this folder "
        f"({', '.join(candidate.name for candidate in claims)}); it holds {_holdings(folder)}. "
        f"Each looks for: {looked_for}. A checkpoint folder must be of exactly one format"
    )


def load_checkpoint(
    folder: str | Path, model_base: str | None, options: LoadOptions
) -> tuple[CheckpointFormat, Loaded]:
    """`folder` (local) loaded by the one format that claims it, on top of `model_base` (a
    location, for folders of trained parts), and that format."""
    checkpoint_format = detect_format(folder)
    return checkpoint_format, checkpoint_format.load(Path(folder), model_base, options)
