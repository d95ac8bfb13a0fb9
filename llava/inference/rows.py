"""One request's answer while it is decoded in a continuous batch: its next token (greedy or
sampled, as `generate` picks it), its streamed text, and when it ends.

`generate` turns the checkpoint's `generation_config` into logits processors; a continuous batch
applies only the decoding settings (temperature, top-p, the library's top-k when sampling), so
`check_generation_config` refuses a checkpoint whose `generation_config` asks for more
(a repetition penalty, a minimum length, ...), which would make its answers differ from
`generate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llava.cli_errors import UserError
from llava.inference.decoding import Completion, DecodingSettings, finish_row
from llava.inference.streaming import BatchStreamer, DeltaCallback

# `generate`'s top-k when sampling and the checkpoint sets none (transformers' default generation
# parameters, `GenerationConfig._get_default_generation_params`).
LIBRARY_TOP_K = 50

# generation_config fields that add a logits processor to `generate`, and their neutral values
# (None is neutral for all).
_PROCESSOR_FIELDS = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": 0,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "typical_p": 1.0,
    "min_p": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "renormalize_logits": False,
}


class UnsupportedGenerationConfigError(UserError, ValueError):
    """The checkpoint's `generation_config` asks for logits processors a continuous batch lacks."""


def check_generation_config(model: Any) -> None:
    """Raise `UnsupportedGenerationConfigError` naming the `generation_config` fields a continuous
    batch does not apply."""
    config = model.generation_config
    unsupported = {
        name: getattr(config, name, None)
        for name, neutral in _PROCESSOR_FIELDS.items()
        if getattr(config, name, None) not in (None, neutral)
    }
    if unsupported:
        raise UnsupportedGenerationConfigError(
            f"the checkpoint's generation_config sets {unsupported}, which continuous batching does not "
            "apply; serve it with the request-level scheduler (--scheduler request)"
        )


def end_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The tokens that end an answer in `generate`: the generation config's end-of-sequence ids
    (one or several), else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return frozenset([eos] if isinstance(eos, int) else eos)


def next_tokens(logits: torch.Tensor, settings: Sequence[DecodingSettings], top_k: int) -> list[int]:
    """Each row's next token from its logits `[B, V]`: the argmax when greedy; else a draw from the
    softmax after `generate`'s warpers, in its order (temperature, top-k, top-p)."""
    tokens = logits.argmax(dim=-1).tolist()  # [B]
    for row, decoding in enumerate(settings):
        if not decoding.do_sample:
            continue
        scores = logits[row : row + 1].float()  # [1, V]
        scores = TemperatureLogitsWarper(decoding.temperature)(None, scores)
        scores = TopKLogitsWarper(top_k)(None, scores)
        if decoding.top_p is not None and decoding.top_p < 1.0:
            scores = TopPLogitsWarper(decoding.top_p)(None, scores)
        tokens[row] = int(torch.multinomial(scores.softmax(dim=-1), num_samples=1))
    return tokens


@dataclass
class RowAnswer:
    """The generated ids of one row, its streamed text, and whether it has ended."""

    tokenizer: Any
    settings: DecodingSettings
    prompt_tokens: int  # positions, images expanded
    end_ids: frozenset[int]
    on_delta: DeltaCallback | None = None
    ids: list[int] = field(default_factory=list)
    _streamer: BatchStreamer | None = field(init=False, default=None)
    _stop: StopStringCriteria | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.on_delta is not None:
            self._streamer = BatchStreamer(self.tokenizer, [self.on_delta], [self.settings.stop])
        if self.settings.stop:
            self._stop = StopStringCriteria(self.tokenizer, list(self.settings.stop))

    def push(self, token: int) -> bool:
        """Append `token` (streaming its text); whether the answer has ended with it: an end
        token, `max_new_tokens` tokens, or a stop string, as `generate`'s stopping criteria."""
        self.ids.append(token)
        if self._streamer is not None:
            self._streamer.put(torch.tensor([token]))
        if token in self.end_ids or len(self.ids) >= self.settings.max_new_tokens:
            return True
        return self._stop is not None and bool(self._stop(torch.tensor([self.ids]), None)[0])

    def finish(self) -> Completion:
        """The completion (as `finish_row` makes it from `generate`'s row), the rest of its text
        streamed."""
        completion = finish_row(self.ids, self.tokenizer, self.settings, self.prompt_tokens)
        if self._streamer is not None:
            self._streamer.finish(0, completion.text)
        return completion
