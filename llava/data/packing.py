"""Padding-free batches (`--padding_free True`): the samples of a micro-batch concatenated into one
row, in the style of transformers' `DataCollatorWithFlattening`.

The row's `position_ids` restart at 0 at each sample and it carries no `attention_mask`; the
model expands its image placeholders per sample (`llava.model.multimodal.merge_image_positions`)
and transformers keeps attention within each sample (packed-sequence masks for eager/SDPA,
flash-attention's varlen path). The first label of every sample is `IGNORE_INDEX`, so the last
token of one sample never predicts the first token of the next; that label is never a target in
a padded batch either (the loss shifts labels by one), so the supervised tokens, their count
(`num_items_in_batch`) and the loss are those of the padded batch of the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava.constants import IGNORE_INDEX


@dataclass
class PaddingFreeCollator:
    """Concatenates a micro-batch's samples into one row `[1, sum L_i]`; the images, in order of
    appearance, into `[N, 3, H, W]` (None when there is none). The same samples per micro-batch
    as `llava.data.dataset.DataCollatorForSupervisedDataset`, so the same samples per step."""

    def __call__(self, samples: list[dict]) -> dict:
        labels = []
        for sample in samples:
            sample_labels = sample["labels"].clone()
            sample_labels[0] = IGNORE_INDEX  # never a target: the previous sample's last token precedes it
            labels.append(sample_labels)
        images = [s["images"] for s in samples if s["images"] is not None]
        return {
            "input_ids": torch.cat([s["input_ids"] for s in samples]).unsqueeze(0),  # [1, L]
            "labels": torch.cat(labels).unsqueeze(0),  # [1, L]
            "position_ids": torch.cat([torch.arange(s["input_ids"].shape[0]) for s in samples]).unsqueeze(0),
            "images": torch.cat(images) if images else None,
            "skipped_samples": [skip for s in samples for skip in s.get("skipped", [])],
        }
