"""A checkpoint loaded once for inference, and batched generation with the library's `generate`.

Prompts are tokenised segment by segment exactly as in training (`tokenize_conversation`), images
preprocessed with the checkpoint's `image_aspect_ratio` (`process_images`), and a batch is
left-padded into one `generate` call with the KV cache; a row's greedy answer is the one it gets
alone (left-padding equivalence, tested for both models). A row can be cancelled while it is
generated (`CancelledRows`, checked after every step).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList

from llava.cli_errors import UserError
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import Conversation
from llava.inference.decoding import Completion, DecodingSettings, finish_row
from llava.inference.streaming import BatchStreamer, DeltaCallback
from llava.mm_utils import get_model_name_from_path, process_images, tokenize_conversation
from llava.model.builder import load_pretrained_model
from llava.model.multimodal import MultimodalGenerationMixin

logger = logging.getLogger(__name__)


class ContextOverflowError(UserError, ValueError):
    """A prompt (with its image positions) plus the answer budget exceeds the model's context."""


class CancelledRows(StoppingCriteria):
    """Ends the rows whose request was cancelled (its event set); `generate` asks after every
    step. Under beam search a request has several consecutive rows (its beams)."""

    def __init__(self, events: Sequence[threading.Event | None]) -> None:
        self.events = list(events)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        rows = input_ids.shape[0]  # requests x beams
        cancelled = [event is not None and event.is_set() for event in self.events]
        if not any(cancelled):
            return torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        per_request = rows // len(self.events)
        return torch.tensor(cancelled).repeat_interleave(per_request).to(input_ids.device)  # [rows]


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: `load_pretrained_model`'s four results plus its name."""

    tokenizer: Any
    model: Any
    image_processor: Any
    context_len: int
    name: str

    @classmethod
    def load(
        cls,
        model_path: str,
        model_base: str | None = None,
        device: str | None = None,
        load_8bit: bool = False,
        load_4bit: bool = False,
        dtype: torch.dtype | None = None,
    ) -> LoadedModel:
        """`dtype` None: `load_pretrained_model`'s default (fp32 on CPU, bf16/fp16 on GPU)."""
        tokenizer, model, image_processor, context_len = load_pretrained_model(
            model_path=model_path,
            model_base=model_base,
            load_8bit=load_8bit,
            load_4bit=load_4bit,
            device=device,
            dtype=dtype,
        )
        name = get_model_name_from_path(model_path)
        logger.info("loaded %s (%s) on %s, %s", name, model.config.model_type, model.device, model.dtype)
        return cls(tokenizer, model, image_processor, context_len, name)

    @property
    def image_positions(self) -> int:
        """Sequence positions one image takes (its placeholder expands into these)."""
        return int(getattr(self.model.config, "num_image_tokens", 1))

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor | None:
        """PIL images -> `[N, 3, H, W]` pixels on the model's device, with the checkpoint's aspect handling."""
        if not images:
            return None
        if self.image_processor is None:
            raise ValueError(
                f"{self.name} is a text-only checkpoint (no vision tower); it cannot take images"
            )
        aspect = getattr(self.model.config, "image_aspect_ratio", "pad")
        pixels = process_images(images, self.image_processor, aspect)
        return pixels.to(device=self.model.device, dtype=self.model.dtype)

    def prompt_ids(self, conv: Conversation) -> list[int]:
        """Token ids of an open conversation, tokenised segment by segment exactly as in training."""
        ids, _ = tokenize_conversation(conv, self.tokenizer)
        return ids

    def prompt_length(self, ids: Sequence[int]) -> int:
        """Positions the prompt `ids` takes once each image placeholder is expanded."""
        images = sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)
        return len(ids) + images * (self.image_positions - 1)

    def check_fits(self, ids: Sequence[int], max_new_tokens: int) -> int:
        """The prompt's length in positions; raises `ContextOverflowError` when it and
        `max_new_tokens` exceed the context."""
        length = self.prompt_length(ids)
        if length + max_new_tokens > self.context_len:
            raise ContextOverflowError(
                f"the prompt takes {length} positions and the answer up to {max_new_tokens} tokens, "
                f"over the model's context of {self.context_len}"
            )
        return length

    def complete(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[torch.Tensor | None],
        settings: DecodingSettings,
        callbacks: Sequence[DeltaCallback | None] | None = None,
        cancelled: Sequence[threading.Event | None] | None = None,
    ) -> list[Completion]:
        """Completions of a batch in one `generate` call: prompts left-padded, images
        `[n_i, 3, H, W]` per prompt (None for none). `callbacks[i]`, when given, receives row
        `i`'s text deltas as they are generated; they add up to its completion's text.
        `cancelled[i]`, when given, is checked after every step: once it is set, row `i` stops
        there (its completion holds what was generated) while the others go on."""
        if len(prompts) != len(images):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image entries")
        pad_id = self.tokenizer.pad_token_id
        longest = max(len(ids) for ids in prompts)
        input_ids = torch.tensor([[pad_id] * (longest - len(ids)) + list(ids) for ids in prompts])  # [B, L]
        attention_mask = torch.tensor(
            [[0] * (longest - len(ids)) + [1] * len(ids) for ids in prompts]
        )  # [B, L]
        present = [pixels for pixels in images if pixels is not None]
        pixel_values = torch.cat(present) if present else None  # [N, 3, H, W], in order of appearance
        streamer = None
        if callbacks is not None and any(callback is not None for callback in callbacks):
            if settings.num_beams > 1:
                raise ValueError("streaming is not possible with beam search (num_beams > 1)")
            streamer = BatchStreamer(self.tokenizer, callbacks, [settings.stop] * len(prompts))
        extra: dict[str, Any] = {"tokenizer": self.tokenizer} if settings.stop else {}
        if cancelled is not None:
            if len(cancelled) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(cancelled)} cancellation events")
            extra["stopping_criteria"] = StoppingCriteriaList([CancelledRows(cancelled)])
        output_ids = self.model.generate(
            input_ids.to(self.model.device),
            images=pixel_values,
            attention_mask=attention_mask.to(self.model.device),
            pad_token_id=pad_id,
            streamer=streamer,
            **extra,
            **settings.generate_kwargs(),
        )
        if not isinstance(self.model, MultimodalGenerationMixin):  # a plain LM returns the prompt too
            output_ids = output_ids[:, longest:]  # [B, n_new]
        completions = [
            finish_row(row, self.tokenizer, settings, self.prompt_length(ids))
            for row, ids in zip(output_ids.tolist(), prompts, strict=True)
        ]
        if streamer is not None:
            for i, completion in enumerate(completions):
                streamer.finish(i, completion.text)
        return completions

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        images: Sequence[torch.Tensor | None],
        settings: DecodingSettings,
    ) -> list[str]:
        """The answers' texts of `complete`."""
        return [completion.text for completion in self.complete(prompts, images, settings)]

    def stream(
        self, prompt: Sequence[int], pixels: torch.Tensor | None, settings: DecodingSettings
    ) -> Iterator[str]:
        """The answer to one prompt as text deltas, generated in a background thread; the
        deltas add up to `complete`'s text. A failure in generation is raised here."""
        deltas: queue.Queue[str | BaseException | None] = queue.Queue()

        def work() -> None:
            try:
                self.complete([prompt], [pixels], settings, [deltas.put])
                deltas.put(None)
            except Exception as err:  # handed to the consuming thread, which raises it
                deltas.put(err)

        thread = threading.Thread(target=work, name="llava-stream", daemon=True)
        thread.start()
        while (item := deltas.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()
