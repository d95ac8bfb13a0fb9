"""Streaming: text deltas of every row of a batch while the library's `generate` runs.

`generate` hands its streamer the new token of every row at each step (`put`, shape `[B]`) and
calls `end` once. `BatchStreamer` decodes each row's tokens so far and passes the new text to that
row's callback. `TextDeltas` makes the deltas of one answer add up exactly to the finished answer
(`Completion.text`): leading whitespace dropped, trailing whitespace, a possible beginning of a
stop string and an unfinished UTF-8 character held back until the next token settles them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llava.inference.decoding import cut_at_stop

logger = logging.getLogger(__name__)

DeltaCallback = Callable[[str], None]


class TextDeltas:
    """The not-yet-sent part of one answer's text as it grows."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = tuple(stop)
        self.sent = ""

    def _settled(self, text: str) -> str:
        text, stopped = cut_at_stop(text.lstrip(), self.stop)
        if stopped:
            return text.rstrip()
        text = text.rstrip("\ufffd")
        keep = len(text)
        for stop in self.stop:  # hold back a suffix that may be the start of a stop string
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    keep = min(keep, len(text) - n)
                    break
        return text[:keep].rstrip()

    def update(self, text: str) -> str:
        """The new settled text of `text` (the answer decoded so far), or ''."""
        settled = self._settled(text)
        if len(settled) <= len(self.sent) or not settled.startswith(self.sent):
            return ""
        delta, self.sent = settled[len(self.sent) :], settled
        return delta

    def finish(self, final: str) -> str:
        """The rest of the finished answer `final`."""
        if not final.startswith(self.sent):
            logger.warning("streamed text %r is not a prefix of the answer %r", self.sent, final)
            return ""
        delta, self.sent = final[len(self.sent) :], final
        return delta


class BatchStreamer:
    """A `generate` streamer for a batch: row `i`'s new text goes to `callbacks[i]` (None: not
    streamed). Rows stop streaming at their end token."""

    def __init__(
        self, tokenizer: Any, callbacks: Sequence[DeltaCallback | None], stops: Sequence[Sequence[str]]
    ) -> None:
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.deltas = [TextDeltas(stop) for stop in stops]
        self.ids: list[list[int]] = [[] for _ in callbacks]
        self.done = [callback is None for callback in callbacks]

    def put(self, value: torch.Tensor) -> None:
        if value.dim() != 1:  # the prompt (generate's first call): nothing new
            return
        eos = self.tokenizer.eos_token_id
        for row, token in enumerate(value.tolist()):  # value: [B]
            if self.done[row]:
                continue
            if token == eos:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            delta = self.deltas[row].update(text)
            if delta:
                self.callbacks[row](delta)

    def end(self) -> None:
        """Nothing: each row's rest is sent with its finished answer (`finish`)."""

    def finish(self, row: int, final: str) -> None:
        """Send row `row`'s text not yet streamed, given its finished answer."""
        callback = self.callbacks[row]
        if callback is not None:
            delta = self.deltas[row].finish(final)
            if delta:
                callback(delta)
