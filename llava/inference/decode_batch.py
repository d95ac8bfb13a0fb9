"""Rows decoded together, each at its own length: the model side of continuous batching.

The layout: one KV cache for every row in flight, a left-padded batch with the rows right-aligned.
Column `j` holds, for each row (a *slot*), one of its positions or padding (0 in `mask`); a row's
positions are contiguous and end at the last column, so one decode step appends one column for
every slot, the attention mask hiding each row's padding and `position_ids` giving each row its
own position (the number it has). That is the layout `generate` decodes a left-padded batch in,
kept alive between requests:

- *join*: newcomers are prefilled together (a left-padded batch of their own, images expanded as
  `generate` expands them); each then takes a free slot, its cache written right-aligned into the
  slot's row with zeros to its left, or, when no slot is free or it is longer than the cache,
  the cache is rebuilt with room for it;
- *leave*: a finished row frees its slot, which goes on being computed (on finite values nobody
  reads) until a newcomer takes it; the cache is rebuilt without the free slots and without the
  columns that are padding for every row once more than half the slots are free, or `TRIM`
  columns are padding for all.

A layer keeps its keys and values in buffers with free columns on the right (`SlotLayer`), so a
step writes its column in place, where the library's `DynamicLayer` copies the whole cache at
every step; copies happen only on rebuilds, which the rules above keep rare while requests come
and go. Why not a cache per row: a batched step would have to stack them at every step. Why not a
paged cache: transformers' paged attention goes through its own attention functions, which the
fusion attention would then have to follow; at the batch sizes one worker serves, the padding
this layout carries is cheap.

A row computes what it computes alone: its padding columns are masked out of every softmax (they
add exact zeros, and hold zeros, never a NaN that 0 x NaN would spread), and its positions are its
own. Only the order in which floats are added changes with the batch's shape, so its logits agree
with its alone logits to float32 rounding, and greedy token ids are identical wherever the two best
logits of a step are further apart than that (the tests check both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from llava.model.compat import kv_cache_keyword
from llava.model.multimodal import MultimodalGenerationMixin

ROOM = 64  # free columns a rebuilt layer gets on its right
TRIM = 32  # rebuild once this many columns are padding for every row


class SlotLayer(DynamicLayer):
    """One layer's keys and values `[S, H_kv, T, hd]` as views of buffers with free columns on the
    right: `update` writes the new columns in place (moving to buffers `ROOM` columns larger when
    full)."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, width: int) -> None:
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.device, self.is_initialized = key_buffer.device, True
        self._use(width)

    @classmethod
    def zeros(cls, keys: torch.Tensor, values: torch.Tensor, slots: int, width: int) -> SlotLayer:
        """Zero buffers for `slots` rows of `width` columns (plus `ROOM`), shaped as `keys`/`values`."""
        heads, dim, value_dim = keys.shape[1], keys.shape[3], values.shape[3]
        return cls(
            keys.new_zeros(slots, heads, width + ROOM, dim),
            values.new_zeros(slots, heads, width + ROOM, value_dim),
            width,
        )

    def _use(self, width: int) -> None:
        self.keys = self.key_buffer[:, :, :width]
        self.values = self.value_buffer[:, :, :width]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        width, new = self.keys.shape[2], key_states.shape[2]
        if width + new > self.key_buffer.shape[2]:
            larger = SlotLayer.zeros(self.keys, self.values, self.keys.shape[0], width + new)
            larger.keys[:, :, :width], larger.values[:, :, :width] = self.keys, self.values
            self.key_buffer, self.value_buffer = larger.key_buffer, larger.value_buffer
        self.key_buffer[:, :, width : width + new] = key_states
        self.value_buffer[:, :, width : width + new] = value_states
        self._use(width + new)
        return self.keys, self.values


@dataclass
class Prefilled:
    """Newcomers after their prefill: their cache, padding mask, and last position's logits."""

    cache: DynamicCache  # each layer [n, H_kv, L, hd]
    mask: torch.Tensor  # [n, L] long, 1 on real positions (images expanded)
    logits: torch.Tensor  # [n, V]


def _right_aligned(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` (positions on dim 2, or dim 1 for a mask) cut or left-padded with zeros to `width`."""
    dim = 2 if tensor.dim() == 4 else 1
    have = tensor.shape[dim]
    if have >= width:
        return tensor.narrow(dim, have - width, width)
    pad = [0, 0] * (tensor.dim() - 1 - dim) + [width - have, 0]
    return F.pad(tensor, pad)


class DecodeBatch:
    """The slots of the rows in flight: their shared cache, padding mask, pending tokens and owners.

    `owners[s]` is the caller's object for the row in slot `s` (None: a free slot); slots keep
    their owners across rebuilds, so the caller finds its rows with `live()`.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.multimodal = isinstance(model, MultimodalGenerationMixin)
        self.cache_keyword = kv_cache_keyword(model.get_decoder())
        self._reset()

    def _reset(self) -> None:
        self.cache: Cache | None = None
        self.mask: torch.Tensor | None = None  # [S, T] long
        self.tokens: torch.Tensor | None = None  # [S]: each slot's newest token, not yet in the cache
        self.owners: list[Any] = []

    def live(self) -> list[tuple[int, Any]]:
        """`(slot, owner)` of every row in flight, in slot order."""
        return [(slot, owner) for slot, owner in enumerate(self.owners) if owner is not None]

    def __len__(self) -> int:
        return sum(owner is not None for owner in self.owners)

    @property
    def columns(self) -> int:
        """The cache's length (every slot padded to it)."""
        return 0 if self.mask is None else self.mask.shape[1]

    def _forward(self, cache: Cache, **inputs) -> torch.Tensor:
        """The last position's logits `[B, V]` of one forward pass that extends `cache`."""
        with torch.no_grad():
            out = self.model(use_cache=True, logits_to_keep=1, **{self.cache_keyword: cache}, **inputs)
        return out.logits[:, -1]

    def prefill(self, prompts: Sequence[Sequence[int]], images: Sequence[torch.Tensor | None]) -> Prefilled:
        """Run the prompts (with image placeholders; `images[i]` `[n_i, 3, H, W]` or None) as one
        left-padded batch, as `generate` runs its prefill. The batch itself is not changed."""
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image entries")
        device = self.model.device
        longest = max(len(ids) for ids in prompts)
        pad_id = 0  # any id: padding is masked out
        input_ids = torch.tensor(
            [[pad_id] * (longest - len(ids)) + list(ids) for ids in prompts], device=device
        )
        mask = torch.tensor(
            [[0] * (longest - len(ids)) + [1] * len(ids) for ids in prompts], device=device
        )  # [n, L]
        cache = DynamicCache()
        if self.multimodal:
            present = [pixels for pixels in images if pixels is not None]
            pixels = torch.cat(present) if present else None  # [N, 3, H, W], in order of appearance
            with torch.no_grad():
                mm = self.model.prepare_multimodal_inputs(input_ids, pixels, mask, padding_side="left")
            extra = {}
            if self.model._uses_vision_stream and mm.vision_stream is not None:
                extra = {"vision_stream": mm.vision_stream, "image_mask": mm.image_mask}
            mask = mm.attention_mask.long()  # [n, T], images expanded
            logits = self._forward(
                cache,
                inputs_embeds=mm.inputs_embeds,
                attention_mask=mask,
                position_ids=mm.position_ids,
                **extra,
            )
        else:
            if any(pixels is not None for pixels in images):
                raise ValueError("a text-only language model cannot take images")
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [n, L]
            logits = self._forward(cache, input_ids=input_ids, attention_mask=mask, position_ids=positions)
        return Prefilled(cache, mask, logits)

    def join(self, prefilled: Prefilled, owners: Sequence[Any], tokens: Sequence[int]) -> None:
        """Give row `i` of `prefilled` a slot, owned by `owners[i]` (None: it does not join), with
        its first token `tokens[i]`."""
        rows = [i for i, owner in enumerate(owners) if owner is not None]
        if not rows:
            return
        free = [slot for slot, owner in enumerate(self.owners) if owner is None]
        if len(free) >= len(rows) and prefilled.mask.shape[1] <= self.columns:
            self._into_free_slots(prefilled, rows, free, owners, tokens)
            return
        index = torch.tensor(rows, device=prefilled.mask.device)
        self._rebuild(
            self._live_part(),
            (
                [(layer.keys[index], layer.values[index]) for layer in prefilled.cache.layers],
                prefilled.mask[index],
                torch.tensor([tokens[i] for i in rows], device=index.device),
                [owners[i] for i in rows],
            ),
        )

    def _into_free_slots(
        self,
        prefilled: Prefilled,
        rows: list[int],
        free: list[int],
        owners: Sequence[Any],
        tokens: Sequence[int],
    ) -> None:
        """Write each joining row right-aligned into a free slot (zeros to its left)."""
        width = self.columns
        for row, slot in zip(rows, free, strict=False):
            for layer, new in zip(self.cache.layers, prefilled.cache.layers, strict=True):
                layer.keys[slot] = _right_aligned(new.keys[row : row + 1], width)[0]  # [H_kv, T, hd]
                layer.values[slot] = _right_aligned(new.values[row : row + 1], width)[0]
            self.mask[slot] = _right_aligned(prefilled.mask[row : row + 1], width)[0]
            self.tokens[slot] = tokens[row]
            self.owners[slot] = owners[row]

    def _live_part(self) -> tuple | None:
        """The rows in flight as a part of `_rebuild`, or None when there are none."""
        live = [slot for slot, _ in self.live()]
        if not live:
            return None
        index = torch.tensor(live, device=self.mask.device)
        layers = [(layer.keys[index], layer.values[index]) for layer in self.cache.layers]
        return layers, self.mask[index], self.tokens[index], [self.owners[slot] for slot in live]

    def _rebuild(self, *parts: tuple | None) -> None:
        """A new cache of the rows of `parts` (`(layers' keys and values, mask, tokens, owners)`
        each), one slot per row, as wide as the longest row, every row right-aligned."""
        parts = [part for part in parts if part is not None]
        if not parts:
            self._reset()
            return
        width = max(int(mask.sum(dim=1).max()) for _, mask, _, _ in parts)
        slots = sum(len(owners) for *_, owners in parts)
        layers = [SlotLayer.zeros(*parts[0][0][i], slots, width) for i in range(len(parts[0][0]))]
        first = 0
        for part_layers, mask, _, owners in parts:
            rows, take = slice(first, first + len(owners)), min(width, mask.shape[1])
            for layer, (keys, values) in zip(layers, part_layers, strict=True):
                layer.keys[rows, :, width - take :] = keys[:, :, keys.shape[2] - take :]
                layer.values[rows, :, width - take :] = values[:, :, values.shape[2] - take :]
            first += len(owners)
        self.cache = Cache(layers=layers)
        self.mask = torch.cat([_right_aligned(mask, width) for _, mask, _, _ in parts])  # [S, T]
        self.tokens = torch.cat([tokens for _, _, tokens, _ in parts])
        self.owners = [owner for *_, owners in parts for owner in owners]

    def step(self) -> torch.Tensor:
        """One decode step of every slot on its pending token: the next logits `[S, V]` (those of
        free slots mean nothing). The caller sets `tokens` of its rows before the next step."""
        if self.cache is None:
            raise RuntimeError("no rows to decode")
        positions = self.mask.sum(dim=1, keepdim=True)  # [S, 1]: each row's own next position
        self.mask = F.pad(self.mask, (0, 1), value=1)  # [S, T + 1]
        return self._forward(
            self.cache, input_ids=self.tokens[:, None], attention_mask=self.mask, position_ids=positions
        )

    def leave(self, slots: Sequence[int]) -> None:
        """Free `slots`; rebuild without the free slots and the columns that are padding for every
        row in flight once they are more than half the slots, or those columns `TRIM` or more."""
        if not slots:
            return
        for slot in slots:
            self.owners[slot] = None
        live = [slot for slot, _ in self.live()]
        if not live:
            self._reset()
            return
        padding = self.columns - int(self.mask[live].sum(dim=1).max())
        if len(self.owners) > 2 * len(live) or padding >= TRIM:
            self._rebuild(self._live_part())
