"""`group_by_modality_length`: batches that hold only image samples or only text-only samples,
with similar lengths inside each global step.

The idea is LLaVA-1.5's (`get_modality_length_grouped_indices` in its `llava_trainer.py`):
https://github.com/haotian-liu/LLaVA/blob/main/llava/train/llava_trainer.py
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def _megabatches(
    indices: list[int], lengths: list[int], size: int, generator: torch.Generator
) -> list[list[int]]:
    order = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    return [sorted(chunk, key=lambda i: abs(lengths[i]), reverse=True) for chunk in chunks]


def modality_grouped_indices(
    lengths: list[int], batch_size: int, world_size: int, generator: torch.Generator
) -> list[int]:
    """A permutation of `range(len(lengths))` in megabatches of `batch_size * world_size` (one
    global step) of a single modality, longest first inside each; megabatches in random order,
    the two modalities' incomplete remainders together at the end.

    Args:
        lengths: positive for samples with images, negative for text-only samples.
    """
    size = batch_size * world_size
    image_ids = [i for i, length in enumerate(lengths) if length > 0]
    text_ids = [i for i, length in enumerate(lengths) if length <= 0]
    groups = [g for ids in (image_ids, text_ids) if ids for g in _megabatches(ids, lengths, size, generator)]
    full = [g for g in groups if len(g) == size]
    remainder = [i for g in groups if len(g) < size for i in g]
    full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for g in full for i in g] + remainder


class ModalityLengthGroupedSampler(Sampler[int]):
    """Sampler over `modality_grouped_indices`, reshuffled per epoch from `seed + epoch` (the same
    order after a resume)."""

    def __init__(self, lengths: list[int], batch_size: int, world_size: int, seed: int = 0):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_indices(self.lengths, self.batch_size, self.world_size, generator))
