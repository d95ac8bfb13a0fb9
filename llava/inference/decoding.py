"""Decoding settings and finished completions.

`DecodingSettings` holds LLaVA's decoding flags plus stop strings and turns them into the
library's `generate` keywords; greedy when `temperature` is 0. `finish_row` turns one row of
generated token ids into a `Completion` (text cut at the first stop string, OpenAI's
`finish_reason`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class DecodingSettings:
    """How to decode; hashable, so that requests with equal settings can share one `generate` call.

    `stop` strings end the answer at their first occurrence and are not part of it (as in
    OpenAI's API); `max_new_tokens` counts generated tokens, the end-of-sequence token included.
    """

    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop strings must be non-empty strings, got {self.stop!r}")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0

    def generate_kwargs(self) -> dict[str, Any]:
        """Keywords for `generate` (the tokenizer, which stop strings need, is added by the engine)."""
        kwargs: dict[str, Any] = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "use_cache": True,
        }
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            kwargs["top_p"] = self.top_p if self.top_p is not None else 1.0
        else:
            # Greedy: neutralise sampling settings a checkpoint's generation_config may carry.
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.stop:
            kwargs["stop_strings"] = list(self.stop)
        return kwargs

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodingSettings:
        return cls(
            temperature=args.temperature,
            top_p=getattr(args, "top_p", None),
            num_beams=getattr(args, "num_beams", 1),
            max_new_tokens=args.max_new_tokens,
        )


@dataclass(frozen=True)
class Completion:
    """One generated answer: its text (stripped, cut before any stop string), why it ended, and
    token counts (`prompt_tokens` counts each image's positions, not its placeholder)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest occurrence of any stop string, and whether one occurred."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def finish_row(
    row: Sequence[int], tokenizer: Any, settings: DecodingSettings, prompt_tokens: int
) -> Completion:
    """The completion of one row of generated ids (padding after the end token ignored)."""
    eos = tokenizer.eos_token_id
    ids = list(row)
    if eos in ids:
        used, ended = ids[: ids.index(eos) + 1], True
    else:
        pad = tokenizer.pad_token_id
        used = ids
        while used and used[-1] == pad:
            used = used[:-1]
        ended = False
    text, stopped = cut_at_stop(tokenizer.decode(used, skip_special_tokens=True), settings.stop)
    reason: FinishReason = "stop" if ended or stopped or len(used) < settings.max_new_tokens else "length"
    return Completion(text.strip(), reason, prompt_tokens, len(used))
