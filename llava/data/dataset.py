"""The supervised dataset (lazy: records are tokenised and images read when a sample is drawn)
and its collator.

Every record passes the checks of `llava.data.checks`, the ones the validator runs. Bad samples
are skipped and counted by default, or stop the run with `strict=True`:
- malformed records and missing image files are found when the dataset is built (cheap checks
  over every record, reported before training starts);
- unreadable images (truncated, decompression bombs), conversations whose masking does not line
  up and samples longer than `model_max_length` (never trained truncated) are found when the
  sample is drawn; the next good record takes its place (deterministically, so the data order
  survives a resume) and the skip travels with the batch to be counted by the trainer.
  With `strict=True` these checks also run over every record when the dataset is built (a
  progress bar; every image decoded once), so a strict run stops before training starts,
  naming the first bad record.
A data set with no usable record is an error (`EmptyDatasetError`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from llava.constants import IGNORE_INDEX
from llava.data.checks import (
    EmptyDatasetError,
    check_structure,
    image_path,
    load_checked_image,
    require_usable,
    tokenize_record,
)
from llava.data.records import BadSampleError, load_records, record_images, record_name, word_length
from llava.mm_utils import process_images

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSample:
    """A record left out of training, and why (`kind`: see `llava.data.checks.KINDS`)."""

    index: int
    reason: str
    kind: str = "malformed"


class LazySupervisedDataset(Dataset):
    """LLaVA-format conversations as `{input_ids, labels, images, skipped}` samples.

    Args:
        data_path: a LLaVA JSON file (list of records) or a JSON-lines file.
        tokenizer: the LLM's tokenizer.
        image_processor: the vision tower's processor.
        template: conversation template name (`v1`, `plain`, `llava_llama_2`, ...).
        image_folder: folder the records' image names are relative to.
        image_aspect_ratio: `pad`, `resize` or `square` (see `llava.mm_utils.process_images`).
        model_max_length: maximum sequence length, image positions included.
        num_image_tokens: positions one image occupies (`config.num_image_tokens`).
        strict: raise on the first bad sample instead of skipping it; every record is checked
            in full when the dataset is built (`check_every_record`).

    Raises:
        EmptyDatasetError: no record, or none left once the bad ones are skipped.
        BadSampleError: with `strict`, the first bad sample, naming the file and the record,
            when the dataset is built.
    """

    def __init__(
        self,
        data_path: str,
        tokenizer,
        image_processor,
        template: str,
        image_folder: str | None,
        image_aspect_ratio: str,
        model_max_length: int,
        num_image_tokens: int,
        strict: bool = False,
    ):
        self.data_path = str(data_path)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = template
        self.image_folder = image_folder
        self.image_aspect_ratio = image_aspect_ratio
        self.model_max_length = model_max_length
        self.num_image_tokens = num_image_tokens
        self.strict = strict
        self.records = load_records(data_path)
        self.skipped: list[SkippedSample] = []
        self.indices: list[int] = []
        for index, record in enumerate(self.records):
            try:
                check_structure(record, image_folder)
            except BadSampleError as err:
                self._reject(index, err)
                continue
            self.indices.append(index)
        self.rejected_at_start = len(self.skipped)
        require_usable(self.data_path, len(self.records), len(self.indices))
        if self.skipped:
            logger.warning(
                "%s: skipping %d of %d records found bad before training, e.g. %s",
                data_path,
                len(self.skipped),
                len(self.records),
                self._describe(self.skipped[0]),
            )
        if strict:  # before training starts, not when a bad record is drawn
            self.check_every_record()

    def _describe(self, skipped: SkippedSample) -> str:
        return f"{self.data_path} {record_name(self.records[skipped.index], skipped.index)}: {skipped.reason}"

    def _reject(self, index: int, err: BadSampleError) -> SkippedSample:
        skipped = SkippedSample(index, str(err), err.kind)
        if self.strict:
            raise BadSampleError(
                f"{self._describe(skipped)} ({err.kind}; --strict_data stops at the first bad sample)",
                kind=err.kind,
            ) from err
        self.skipped.append(skipped)
        return skipped

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def modality_lengths(self) -> list[int]:
        """Length estimates per sample, positive with images and negative for text-only ones."""
        lengths = []
        for index in self.indices:
            record = self.records[index]
            n_images = len(record_images(record))
            length = word_length(record) + n_images * self.num_image_tokens
            lengths.append(length if n_images else -max(length, 1))
        return lengths

    def check_record(self, index: int) -> None:
        """The checks drawing record `index` runs (template fit, masking, length, every image
        decoded in full); raises `BadSampleError`."""
        record = self.records[index]
        tokenize_record(record, self.template, self.tokenizer, self.model_max_length, self.num_image_tokens)
        for name in record_images(record):
            load_checked_image(image_path(name, self.image_folder))

    def check_every_record(self) -> None:
        """`check_record` over every record left after the cheap checks, with a progress bar (on
        the main process); the first bad one raises `BadSampleError` naming the file and the
        record (run under `strict`, where `_reject` raises)."""
        quiet = int(os.environ.get("RANK", "0")) != 0
        for index in tqdm(self.indices, desc=f"checking {self.data_path}", unit="record", disable=quiet):
            try:
                self.check_record(index)
            except BadSampleError as err:
                self._reject(index, err)

    def build_sample(self, index: int) -> dict:
        """The tokenised sample of record `index`; raises `BadSampleError` when it is unusable."""
        record = self.records[index]
        input_ids, labels = tokenize_record(
            record, self.template, self.tokenizer, self.model_max_length, self.num_image_tokens
        )
        names = record_images(record)
        images = None
        if names:
            pictures = [load_checked_image(image_path(name, self.image_folder)) for name in names]
            images = process_images(pictures, self.image_processor, self.image_aspect_ratio)  # [n, 3, H, W]
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "images": images,
        }

    def __getitem__(self, i: int) -> dict:
        skipped: list[SkippedSample] = []
        for attempt in range(len(self.indices)):
            index = self.indices[(i + attempt) % len(self.indices)]
            try:
                sample = self.build_sample(index)
            except BadSampleError as err:
                bad = self._reject(index, err)
                logger.warning("skipping %s", self._describe(bad))
                skipped.append(bad)
                continue
            sample["skipped"] = skipped
            return sample
        raise EmptyDatasetError(
            f"{self.data_path}: none of its {len(self.records)} record(s) is usable (every one failed "
            f"to load); first: {self._describe(skipped[0])}"
        )


@dataclass
class DataCollatorForSupervisedDataset:
    """Pads ids (with the pad token) and labels (with `IGNORE_INDEX`) on the right; concatenates
    the batch's images in order of appearance into `[N, 3, H, W]` (None when there is none)."""

    pad_token_id: int

    def __call__(self, samples: list[dict]) -> dict:
        input_ids = torch.nn.utils.rnn.pad_sequence(
            [s["input_ids"] for s in samples], batch_first=True, padding_value=self.pad_token_id
        )  # [B, L]
        labels = torch.nn.utils.rnn.pad_sequence(
            [s["labels"] for s in samples], batch_first=True, padding_value=IGNORE_INDEX
        )  # [B, L]
        lengths = torch.tensor([s["input_ids"].shape[0] for s in samples])
        attention_mask = (
            torch.arange(input_ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        ).long()  # [B, L]
        images = [s["images"] for s in samples if s["images"] is not None]
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "images": torch.cat(images) if images else None,
            "skipped_samples": [skip for s in samples for skip in s.get("skipped", [])],
        }
