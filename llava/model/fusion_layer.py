"""What `self_attn.fusion` is, for the paper's layer (`llava.model.fusion`) and the release's
(`llava.model.release_fusion`) alike: the selection of image rows and the shared forward."""

from __future__ import annotations

import torch
from torch import nn


@torch.compiler.disable
def image_rows(
    flat_x: torch.Tensor,
    vision_stream: torch.Tensor | None,
    image_mask: torch.Tensor | None,
    vision_width: int,
    always: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The flattened image positions, the text positions and the image positions' vision vectors
    (`[N_img]`, `[N_text]`, `[N_img, d_v]`), shared by every layer; no image positions (and zero
    vision rows) when there is no image and `always` (in training, so that the vision half stays in
    the graph on every rank, as ZeRO-3 needs); None when there is no image and nothing needs the
    vision half. Their counts depend on the mask's values, so this runs eagerly when the layer is
    compiled (`llava.model.compiled_fusion`), and the layer's arithmetic after it is one graph."""
    flat_mask = None if image_mask is None else image_mask.reshape(-1)  # [B*T]
    if flat_mask is not None and flat_mask.any():
        if vision_stream is None:
            raise ValueError("image_mask marks image positions but no vision_stream was given")
        rows = flat_mask.nonzero().squeeze(1)
        vision = vision_stream.reshape(-1, vision_stream.shape[-1]).index_select(0, rows)
        return rows, (~flat_mask).nonzero().squeeze(1), vision
    if always:
        device = flat_x.device
        no_rows = torch.zeros(0, dtype=torch.long, device=device)
        all_rows = torch.arange(flat_x.shape[0], device=device)
        return no_rows, all_rows, flat_x.new_zeros(0, vision_width)
    return None


class FusionLayer(nn.Module):
    """What `self_attn.fusion` is: the term added to the q/k/v targets of one attention layer,
    `split_sizes` columns per target. A layer gives `_vision_width`, `_fuse` (the term from the
    flattened positions) and `_reference` (its literal formulas)."""

    targets: list[str]
    split_sizes: list[int]

    def forward(
        self,
        x: torch.Tensor,
        vision_stream: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, T, d_h]; vision_stream: [B, T, d_v]; image_mask: [B, T] bool -> [B, T, total].

        Without `image_mask` every position is text (e.g. decode steps). In training the vision
        half always runs (on zero rows when there is no image), so every fusion parameter is in
        the graph on every rank, as ZeRO-3 needs when some ranks draw text-only micro-batches.
        """
        flat_x = x.reshape(-1, x.shape[-1])  # [B*T, d_h]
        selected = image_rows(flat_x, vision_stream, image_mask, self._vision_width(), self.training)
        return self._fuse(flat_x, selected).reshape(*x.shape[:-1], -1)

    def reference_forward(
        self,
        x: torch.Tensor,
        vision_stream: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The layer's literal formulas over the full padded stream (tests only)."""
        if image_mask is None:
            batch, length, _ = x.shape
            image_mask = torch.zeros(batch, length, dtype=torch.bool, device=x.device)
            vision_stream = x.new_zeros(batch, length, self._vision_width())
        return self._reference(x, vision_stream, image_mask)
