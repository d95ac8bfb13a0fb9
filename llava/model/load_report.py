"""What a load did with each parameter (`LoadReport`), and `from_pretrained` with its shape check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


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


def from_pretrained_checked(model_cls, folder: str | Path, **kwargs) -> tuple[torch.nn.Module, LoadReport]:
    """`model_cls.from_pretrained(folder)` and its report; a tensor whose shape disagrees with
    the config is an error naming the key, the folder and both shapes (never re-initialised).

    Quantized loads (CUDA and bitsandbytes only, not exercised by the CPU tests) keep
    transformers' own check, which also raises on a mismatch, pointing at its load report.
    """
    quantized = kwargs.get("quantization_config") is not None
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
    return model, report
