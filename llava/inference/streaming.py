"""Streaming: text deltas of every row of a batch while the library's `generate` runs.

`generate` hands its streamer the new token of every row at each step (`put`, shape `[B]`) and
calls `end` once. `BatchStreamer` turns each row's new token into text (`IncrementalDetokenizer`,
a short window per token) and passes the new text to that row's callback. `TextDeltas` makes the
deltas of one answer add up exactly to the finished answer (`Completion.text`): leading
whitespace dropped, trailing whitespace, a possible beginning of a stop string and an unfinished
UTF-8 character held back until the next token settles them. Both look at each token's text a
bounded number of times, so streaming an answer takes time linear in its length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llava.inference.decoding import cut_at_stop

logger = logging.getLogger(__name__)

DeltaCallback = Callable[[str], None]


class IncrementalDetokenizer:
    """One answer's text as its tokens arrive, in constant time per token: each token decodes
    only a short window, the tokens from the start of the previous piece on. A window decoded
    alone can lose what only earlier tokens settle (SentencePiece's leading space, a character
    whose bytes span tokens), so the window is decoded with and without its newest tokens and the
    difference is the text they add (the offsets technique of vLLM's and TGI's detokenizers).
    A window ending mid-character (U+FFFD) waits for the next token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = (
            0  # the window starts at `prefix`; `read`: the tokens already turned into text
        )

    def push(self, token: int) -> str:
        """The text `token` adds (possibly '')."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


class TextDeltas:
    """The deltas of one answer's text, each piece looked at once: leading whitespace dropped,
    and trailing whitespace, a possible beginning of a stop string and an unfinished character
    held back (`pending`) until later text settles them, so the deltas add up to the finished
    answer (`Completion.text`) in time linear in its length."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = tuple(stop)
        self.pending = ""  # received, not yet sent: short (held-back whitespace or a stop's start)
        self.pieces: list[str] = []  # sent
        self.started = self.stopped = False

    def _held_back(self, text: str) -> int:
        """Where the sendable part of `text` ends."""
        keep = len(text.rstrip("\ufffd"))
        for stop in self.stop:  # a suffix that may be the start of a stop string
            for n in range(min(len(stop) - 1, keep), 0, -1):
                if text[:keep].endswith(stop[:n]):
                    keep -= n
                    break
        return len(text[:keep].rstrip())

    def push(self, piece: str) -> str:
        """The new settled text once `piece` is appended to the answer so far, or ''."""
        if self.stopped:
            return ""
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        text, self.stopped = cut_at_stop(self.pending + piece, self.stop)
        keep = len(text.rstrip()) if self.stopped else self._held_back(text)
        delta, self.pending = text[:keep], text[keep:]
        if delta:
            self.pieces.append(delta)
        return delta

    def finish(self, final: str) -> str:
        """The rest of the finished answer `final`."""
        sent = "".join(self.pieces)
        if not final.startswith(sent):
            logger.warning("streamed text %r is not a prefix of the answer %r", sent, final)
            return ""
        delta = final[len(sent) :]
        self.pieces.append(delta)
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
        self.decoders = [IncrementalDetokenizer(tokenizer) for _ in callbacks]
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
            delta = self.deltas[row].push(self.decoders[row].push(token))
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
