"""What a load did with each parameter (`LoadReport`), and `from_pretrained` with its shape check."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What a load did with the parameters its first checkpoint (the base) did not provide.

    `missing`: newly initialised, no file gave them a value; `loaded`: file or folder -> the
    parameters read from it on top of the base; `unexpected`: base keys without a parameter.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: dict[str, list[str]] = field(default_factory=dict)

    def record(self, source: str | Path, names: list[str]) -> None:
        """`names` were read from `source`: they are no longer newly initialised."""
        self.loaded[str(source)] = sorted(names)
        self.missing = sorted(set(self.missing) - set(names))

    def describe(self) -> str:
        loaded = "; ".join(f"{len(names)} tensor(s) from {src}" for src, names in self.loaded.items())
        return (
            f"loaded on top of the base: {loaded or 'nothing'}; newly initialised: {self.missing or 'none'}"
        )


def _not_a_load_report(record: logging.LogRecord) -> bool:
    """False for transformers' load report, unless it has CONVERSION rows (the error transformers
    raises next points at them)."""
    message = record.getMessage()
    return "LOAD REPORT" not in message or "CONVERSION" in message


@contextlib.contextmanager
def _transformers_load_report_replaced() -> Iterator[None]:
    """Without transformers' load report: its MISSING rows call "newly initialized" what the
    caller reads next from other files (the tower, `non_lora_trainables`); the `LoadReport`
    of `from_pretrained_checked` replaces it."""
    library = logging.getLogger("transformers.modeling_utils")
    library.addFilter(_not_a_load_report)
    try:
        yield
    finally:
        library.removeFilter(_not_a_load_report)


def from_pretrained_checked(model_cls, folder: str | Path, **kwargs) -> tuple[torch.nn.Module, LoadReport]:
    """`model_cls.from_pretrained(folder)` and its report (in place of transformers' own); a
    tensor whose shape disagrees with the config is an error naming the key, the folder and both
    shapes (never re-initialised), and keys of `folder` that match no parameter are a warning.

    Quantized loads (CUDA and bitsandbytes only, not exercised by the CPU tests) keep
    transformers' own check, which also raises on a mismatch, pointing at its load report.
    """
    quantized = kwargs.get("quantization_config") is not None
    with contextlib.nullcontext() if quantized else _transformers_load_report_replaced():
        model, info = model_cls.from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=not quantized, **kwargs
        )
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        details = "; ".join(
            f"{key}: checkpoint {tuple(theirs)} vs model {tuple(mine)}"
            for key, theirs, mine in mismatched[:5]
        )
        raise ValueError(
            f"{folder}: {len(mismatched)} tensor(s) have another shape than the config gives them "
            f"({details}); was it saved with other settings (e.g. fusion_targets, fusion_layer_ids)?"
        )
    report = LoadReport(missing=sorted(info["missing_keys"]), unexpected=sorted(info["unexpected_keys"]))
    if report.unexpected:
        logger.warning(
            "%s: %d key(s) match no parameter and were ignored, e.g. %s",
            folder,
            len(report.unexpected),
            report.unexpected[:3],
        )
    return model, report
