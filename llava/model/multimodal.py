"""Turning (token ids with image placeholders, images) into model inputs; shared by both models.

Each `IMAGE_TOKEN_INDEX` placeholder expands into the P positions of one image. What fills them
is the model's business: the LLaVA baseline puts its projector's output in the embeddings;
Inverse-LLaVA puts zeros there and carries the features in a separate *vision stream* (`V_pad`)
that its fusion layers read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.vision_tower import tower_image_size


@dataclass
class MultimodalInputs:
    """Model inputs with every image placeholder expanded. Shapes: B samples, T positions."""

    inputs_embeds: torch.Tensor  # [B, T, d_h]
    attention_mask: torch.Tensor | None  # [B, T], 1 on real positions; None for a packed row
    position_ids: torch.Tensor  # [B, T], restarting at 0 at each sample of a packed row
    image_mask: torch.Tensor  # [B, T] bool, True at image positions (P_vis)
    labels: torch.Tensor | None = None  # [B, T], IGNORE_INDEX at image and padding positions
    vision_stream: torch.Tensor | None = None  # [B, T, d_v], zeros at text positions


def count_image_placeholders(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[int]:
    is_image = input_ids == IMAGE_TOKEN_INDEX
    if attention_mask is not None:
        is_image &= attention_mask.bool()
    return is_image.sum(dim=1).tolist()


def packed_sample_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """`[1, L]` positions of a packed row (0, 1, ... restarting at 0 at each sample) -> `[L]`
    the index of the sample each position belongs to.

    Raises:
        ValueError: the row is not one packed row, or its positions do not count up from 0
            within each sample (naming the first wrong index).
    """
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        raise ValueError(
            f"a padding-free batch is one packed row: position_ids must be [1, L], got {list(position_ids.shape)}"
        )
    positions = position_ids[0]  # [L]
    previous = torch.cat([positions.new_full((1,), -1), positions[:-1]])
    wrong = ((positions != previous + 1) & (positions != 0)).nonzero()
    if wrong.numel():
        index = wrong[0, 0].item()
        raise ValueError(
            f"position_ids of the packed row must count 0, 1, ... within each sample; index {index} holds "
            f"{positions[index].item()} after {previous[index].item()}"
        )
    return (positions == 0).long().cumsum(0) - 1


def restarting_positions(sample_ids: torch.Tensor) -> torch.Tensor:
    """`[T]` sample index per position (non-decreasing) -> `[T]` positions 0, 1, ... per sample."""
    steps = torch.arange(sample_ids.shape[0], device=sample_ids.device)
    first = torch.ones_like(sample_ids, dtype=torch.bool)
    first[1:] = sample_ids[1:] != sample_ids[:-1]
    return steps - torch.where(first, steps, 0).cummax(0).values


def merge_image_positions(
    input_ids: torch.Tensor,
    embed_tokens: nn.Module,
    image_features: torch.Tensor | None,
    image_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    padding_side: str = "right",
    with_vision_stream: bool = True,
    position_ids: torch.Tensor | None = None,
) -> MultimodalInputs:
    """Expand every image placeholder of a (padded or packed) batch into the positions of its image.

    A padded batch (`position_ids` None) is re-padded; its positions count the real positions of
    each row. A packed row (`position_ids` given: the padding-free collator's `[1, L]` positions,
    restarting at 0 at each sample) stays one row `[1, T]`: each sample keeps its image
    positions, the positions restart at 0 at each sample after the expansion, and the returned
    `attention_mask` is None, which is what makes transformers keep attention within each sample
    (its packed-sequence masks for eager/SDPA, flash-attention's varlen path).

    Args:
        input_ids: `[B, L]` token ids with `IMAGE_TOKEN_INDEX` placeholders (padding anywhere,
            marked by `attention_mask`), or `[1, L]` one packed row.
        embed_tokens: the LLM's token embedding.
        image_features: `[N, P, d_v]`, the images of the whole batch in order of appearance
            (sample by sample, left to right); None when the batch has no image.
        image_embeds: `[N, P, d_h]` embeddings for the image positions (the baseline's projector
            output); zeros when None (Inverse-LLaVA: `H_0 = 0` at `P_vis`).
        padding_side: where the re-padded batch is padded (`left` for generation).
        with_vision_stream: also build `V_pad` `[B, T, d_v]` from `image_features`.
        position_ids: `[1, L]` positions of a packed row (see `packed_sample_ids`); None for a
            padded batch.

    Raises:
        ValueError: the number of placeholders differs from the number of images, naming the
            samples' placeholder counts; a packed row with padding or malformed positions.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, _ = input_ids.shape
    device = input_ids.device
    packed = position_ids is not None
    if packed and attention_mask is not None and not attention_mask.bool().all():
        raise ValueError(
            "a packed row has no padding: pass attention_mask None (or all ones) with position_ids"
        )
    if packed and position_ids.shape != input_ids.shape:
        raise ValueError(
            f"position_ids {list(position_ids.shape)} and input_ids {list(input_ids.shape)} differ in shape"
        )
    sample_ids = packed_sample_ids(position_ids) if packed else None  # [L]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    counts = count_image_placeholders(input_ids, attention_mask)
    n_images = 0 if image_features is None else image_features.shape[0]
    if sum(counts) != n_images:
        raise ValueError(
            f"image count mismatch: the prompts hold {sum(counts)} image placeholder(s) "
            f"(per sample: {counts}) but {n_images} image(s) were given"
        )
    is_placeholder = input_ids == IMAGE_TOKEN_INDEX
    text_embeds = embed_tokens(input_ids.masked_fill(is_placeholder, 0))  # [B, L, d_h]
    d_h = text_embeds.shape[-1]
    n_patches = 0 if image_features is None else image_features.shape[1]
    if image_embeds is None and image_features is not None:
        image_embeds = text_embeds.new_zeros(n_images, n_patches, d_h)
    keep_stream = with_vision_stream and image_features is not None

    rows_embeds, rows_labels, rows_image, rows_stream = [], [], [], []
    pieces_id: list[torch.Tensor] = []  # sample index per expanded position (packed row)
    image_index = 0
    for b in range(batch):
        valid = attention_mask[b].bool()
        ids, embeds = input_ids[b][valid], text_embeds[b][valid]
        labs = labels[b][valid] if labels is not None else None
        cuts = [-1, *is_placeholder[b][valid].nonzero().squeeze(1).tolist(), ids.shape[0]]
        pieces_e, pieces_l, pieces_m, pieces_s = [], [], [], []
        for k in range(len(cuts) - 1):
            start, stop = cuts[k] + 1, cuts[k + 1]
            span = stop - start
            pieces_e.append(embeds[start:stop])
            pieces_m.append(torch.zeros(span, dtype=torch.bool, device=device))
            if packed:
                pieces_id.append(sample_ids[start:stop])
            if labs is not None:
                pieces_l.append(labs[start:stop])
            if keep_stream:
                pieces_s.append(image_features.new_zeros(span, image_features.shape[-1]))
            if k == len(cuts) - 2:
                break
            pieces_e.append(image_embeds[image_index].to(embeds.dtype))
            pieces_m.append(torch.ones(n_patches, dtype=torch.bool, device=device))
            if packed:  # the image belongs to the sample of its placeholder
                pieces_id.append(sample_ids[stop].expand(n_patches))
            if labs is not None:
                pieces_l.append(torch.full((n_patches,), IGNORE_INDEX, dtype=labs.dtype, device=device))
            if keep_stream:
                pieces_s.append(image_features[image_index])
            image_index += 1
        rows_embeds.append(torch.cat(pieces_e))
        rows_image.append(torch.cat(pieces_m))
        if labs is not None:
            rows_labels.append(torch.cat(pieces_l))
        if keep_stream:
            rows_stream.append(torch.cat(pieces_s))

    if packed:
        return MultimodalInputs(
            inputs_embeds=rows_embeds[0].unsqueeze(0),
            attention_mask=None,
            position_ids=restarting_positions(torch.cat(pieces_id)).unsqueeze(0),
            image_mask=rows_image[0].unsqueeze(0),
            labels=rows_labels[0].unsqueeze(0) if labels is not None else None,
            vision_stream=rows_stream[0].unsqueeze(0) if keep_stream else None,
        )
    lengths = [row.shape[0] for row in rows_embeds]
    total = max(lengths)

    def pad(rows: list[torch.Tensor], value) -> torch.Tensor:
        out = []
        for row in rows:
            filler = row.new_full((total - row.shape[0], *row.shape[1:]), value)
            out.append(torch.cat([filler, row] if padding_side == "left" else [row, filler]))
        return torch.stack(out)

    new_mask = pad([torch.ones(n, dtype=attention_mask.dtype, device=device) for n in lengths], 0)
    return MultimodalInputs(
        inputs_embeds=pad(rows_embeds, 0.0),
        attention_mask=new_mask,
        position_ids=(new_mask.long().cumsum(-1) - 1).clamp(min=0),
        image_mask=pad(rows_image, False),
        labels=pad(rows_labels, IGNORE_INDEX) if labels is not None else None,
        vision_stream=pad(rows_stream, 0.0) if keep_stream else None,
    )


def stack_images(images) -> torch.Tensor | None:
    """Accept `[N, 3, H, W]`, or a list of `[3, H, W]` / `[k, 3, H, W]` tensors; return `[N, 3, H, W]`."""
    if images is None:
        return None
    if isinstance(images, torch.Tensor):
        return images if images.dim() == 4 else images.unsqueeze(0)
    parts = [image if image.dim() == 4 else image.unsqueeze(0) for image in images]
    return torch.cat(parts) if parts else None


class MultimodalGenerationMixin:
    """What the two causal LMs share: their decoder (`decoder_cls`), image-aware `forward`
    preparation and `generate`.

    Subclasses define `_image_position_embeds(features)` (what fills image positions) and
    `_uses_vision_stream` (whether the features also travel as `vision_stream`).
    """

    _uses_vision_stream = False
    # The tower's weights come from their own checkpoint (see llava.model.builder).
    _keys_to_ignore_on_load_missing = [r"^model\.vision_tower\."]
    decoder_cls: type  # the family's generated Llava<Family>Model / Fusion<Family>Model, set by the registry

    def __init__(self, config):
        super().__init__(config)
        self.model = self.decoder_cls(config)
        self.post_init()

    def get_vision_tower(self):
        return self.model.vision_tower

    def get_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """`[N, 3, H, W]` pixels -> `[N, P, d_v]` features from the frozen tower."""
        return self.get_vision_tower()(images)

    def _image_position_embeds(self, features: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        images=None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
        position_ids: torch.Tensor | None = None,
    ) -> MultimodalInputs:
        """Encode the images and expand the placeholders of `input_ids`, a padded batch or, with
        `position_ids`, one packed row (see `merge_image_positions`)."""
        images = stack_images(images)
        features = embeds = anchor = None
        if images is not None:
            features = self.get_image_features(images)  # [N, P, d_v]
            embeds = self._image_position_embeds(features)
            features = features.to(self.dtype)
        elif self.training:
            anchor = self._touch_vision_modules()
        inputs = merge_image_positions(
            input_ids,
            self.get_input_embeddings(),
            features,
            image_embeds=embeds,
            attention_mask=attention_mask,
            labels=labels,
            padding_side=padding_side,
            with_vision_stream=self._uses_vision_stream,
            position_ids=position_ids,
        )
        if anchor is not None:
            inputs.inputs_embeds = inputs.inputs_embeds + anchor
        return inputs

    def _touch_vision_modules(self) -> torch.Tensor | None:
        """Run the vision modules on one blank image whose output is discarded.

        Only in training, for a micro-batch without images: under ZeRO-3 every rank must run the
        same sharded modules, or the ranks that drew images wait forever for the others. Returns
        a zero that keeps trainable vision modules (the projector) in the graph, or None.
        """
        side = tower_image_size(self.get_vision_tower().config)
        blank = torch.zeros(1, 3, side, side, device=self.device, dtype=self.dtype)
        embeds = self._image_position_embeds(self.get_image_features(blank))
        return None if embeds is None else embeds.sum() * 0.0

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`images` (`[N, 3, H, W]`, the batch's images in order of appearance) fill the
        `IMAGE_TOKEN_INDEX` placeholders of `input_ids`. Inverse-LLaVA also accepts already
        expanded `inputs_embeds` with `vision_stream` (`[B, T, d_v]`) and `image_mask` (`[B, T]`). The KV
        cache passes through `kwargs` under whichever name the installed transformers uses.

        A padding-free batch (`llava.data.packing`) is `input_ids` `[1, L]` with `position_ids`
        restarting at 0 at each sample and no `attention_mask`: the expanded row keeps attention
        within each sample and its positions restart per sample, so every sample's logits are the
        ones it has in a padded batch."""
        if images is None and input_ids is not None and (input_ids == IMAGE_TOKEN_INDEX).any():
            counts = count_image_placeholders(input_ids, attention_mask)
            raise ValueError(
                f"input_ids hold image placeholders (per sample: {counts}) but no images were given"
            )
        if images is not None and inputs_embeds is not None:
            raise ValueError("pass either images with input_ids, or inputs_embeds, not both")
        if input_ids is not None and (images is not None or self.training):
            mm = self.prepare_multimodal_inputs(
                input_ids, images, attention_mask, labels, position_ids=position_ids
            )
            input_ids, inputs_embeds = None, mm.inputs_embeds
            attention_mask, position_ids, labels = mm.attention_mask, mm.position_ids, mm.labels
            if self._uses_vision_stream:
                kwargs.update(vision_stream=mm.vision_stream, image_mask=mm.image_mask)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self, inputs: torch.Tensor | None = None, images=None, attention_mask=None, image_sizes=None, **kwargs
    ):
        """The library's `generate` (KV cache, greedy/sampling/beam search, stop strings, ...)
        on a prompt with image placeholders. Images are consumed at prefill; the batch is
        re-padded on the left. Returns only the new tokens, as LLaVA's models do.

        `image_sizes`, LLaVA's `(width, height)` per image, feeds LLaVA-1.6's `anyres` tiling only;
        every image here is processed to the tower's fixed size, so it is checked to hold one size
        per image and not used further."""
        if "inputs_embeds" in kwargs:
            raise ValueError("pass token ids with image placeholders (and images), not inputs_embeds")
        input_ids = kwargs.pop("input_ids", None)
        if (inputs is None) == (input_ids is None):
            raise ValueError("pass the prompt's token ids once, as `inputs` or as `input_ids`")
        inputs = inputs if inputs is not None else input_ids
        images = stack_images(images)  # [N, 3, H, W] or None
        n_images = 0 if images is None else images.shape[0]
        if image_sizes is not None and len(image_sizes) != n_images:
            raise ValueError(
                f"image_sizes holds {len(image_sizes)} size(s) but {n_images} image(s) were given"
            )
        mm = self.prepare_multimodal_inputs(inputs, images, attention_mask, padding_side="left")
        extra = {}
        if self._uses_vision_stream and mm.vision_stream is not None:
            extra = {"vision_stream": mm.vision_stream, "image_mask": mm.image_mask}
        return super().generate(
            inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, **extra, **kwargs
        )
