"""The model behind the server's routes: request limits, image reading under a pixel budget,
remote fetches on their own pool, prompt building, context checks, and the scheduler."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StopStringCriteria

from llava.constants import IMAGE_TOKEN_INDEX
from llava.inference import Completion, ContextOverflowError, DecodingSettings, LoadedModel
from llava.inference.continuous import ContinuousScheduler
from llava.inference.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    EncodedImage,
    FetchBusyError,
    ImageInputError,
    ImagePolicy,
    RemoteFetcher,
    TooManyPixelsError,
    is_remote,
    read_image_input,
    source_label,
)
from llava.inference.scheduler import BatchScheduler
from llava.inference.streaming import DeltaCallback
from llava.serve.openai_protocol import ChatRequest, RequestError


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold and how long it may take to arrive: body bytes, images and
    their pixels (each, and all of a request's together), the answer budget when `max_tokens` is
    absent (cut to what the context leaves), and the deadline for the body."""

    max_body_bytes: int = 20 * 2**20
    max_images: int = 4
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_request_pixels: int = 2 * DEFAULT_MAX_IMAGE_PIXELS
    default_max_tokens: int = 512
    body_timeout_s: float = 30.0


@dataclass
class ChatService:
    """The model behind the routes: prompt building, image reading, context checks, batching.

    Remote images are fetched on `fetcher`'s own threads; requests with images are prepared at
    most `image_limiter`'s number at a time (bounding the memory of decoded images), requests
    without on the default thread pool, so neither can hold the other up."""

    engine: LoadedModel
    scheduler: BatchScheduler | ContinuousScheduler
    model_id: str
    conv_mode: str
    policy: ImagePolicy
    limits: ServerLimits
    created: int
    fetcher: RemoteFetcher
    image_limiter: Any  # anyio.CapacityLimiter

    async def fetch_remote_images(self, request: ChatRequest) -> dict[int, bytes]:
        """The bytes of the request's remote images by index, fetched at once on the fetch pool,
        all of them within the policy's time limit (waiting for a fetch thread included).

        Raises:
            RequestError: 429 when the fetch pool is full, 400 naming an image not fetched.
        """
        remote = [k for k, source in enumerate(request.images) if is_remote(source)]
        if not remote or not self.policy.allow_remote:
            return {}  # without the flag, `prepare` refuses them
        deadline = asyncio.get_running_loop().time() + self.policy.timeout_s
        pending: dict[int, asyncio.Future[bytes]] = {}
        try:
            for k in remote:
                pending[k] = self._start_fetch(request, k)
            return {k: await self._fetched(request, k, future, deadline) for k, future in pending.items()}
        finally:
            for future in pending.values():
                future.cancel()  # a fetch still waiting for a thread is dropped

    def _start_fetch(self, request: ChatRequest, k: int) -> asyncio.Future[bytes]:
        name = request.image_names[k]
        try:
            return asyncio.wrap_future(
                self.fetcher.submit(request.images[k], source_label(request.images[k], name))
            )
        except FetchBusyError as err:
            raise RequestError(str(err), status=429, param=name, code="fetches_busy") from err

    async def _fetched(
        self, request: ChatRequest, k: int, future: asyncio.Future[bytes], deadline: float
    ) -> bytes:
        name = request.image_names[k]
        try:
            return await asyncio.wait_for(future, max(0.0, deadline - asyncio.get_running_loop().time()))
        except asyncio.TimeoutError as err:
            message = (
                f"{source_label(request.images[k], name)}: not fetched within {self.policy.timeout_s:g} s"
            )
            raise RequestError(message, param=name, code="invalid_image") from err
        except ImageInputError as err:
            raise RequestError(str(err), param=name, code="invalid_image") from err

    def prepare(
        self, request: ChatRequest, fetched: Mapping[int, bytes]
    ) -> tuple[list[int], torch.Tensor | None, DecodingSettings]:
        """Prompt ids, pixels `[n, 3, H, W]` and decoding of a validated request (blocking work).
        Everything that can refuse it is checked before any image is decoded: each image's
        pixels from its header, each and together, the prompt, the stop strings, the context.

        Raises:
            RequestError: an image refused, unreadable or too large, or the prompt over the context.
        """
        encoded = [self._read_image(request, k, fetched.get(k)) for k in range(len(request.images))]
        self._check_request_pixels(request, encoded)
        ids, budget = self._prompt(request, len(encoded))
        return ids, self._pixels(request, encoded), request.settings(budget)

    def _prompt(self, request: ChatRequest, images: int) -> tuple[list[int], int]:
        """The prompt's ids and the answer budget, checked against the images and the context."""
        ids = self.engine.prompt_ids(request.conversation)
        placeholders = ids.count(IMAGE_TOKEN_INDEX)
        if placeholders != images:
            raise RequestError(
                f"the prompt holds {placeholders} image placeholder(s) for {images} image(s)",
                param="messages",
            )
        self._check_stop_strings(request.stop)
        length = self.engine.prompt_length(ids)
        budget = request.max_tokens
        if budget is None:
            budget = min(self.limits.default_max_tokens, self.engine.context_len - length)
        if budget < 1:
            raise RequestError(
                f"the prompt takes {length} positions, the whole context of {self.engine.context_len}",
                param="messages",
                code="context_length_exceeded",
            )
        try:
            self.engine.check_fits(ids, budget)
        except ContextOverflowError as err:
            raise RequestError(str(err), param="messages", code="context_length_exceeded") from err
        return ids, budget

    def _pixels(self, request: ChatRequest, encoded: Sequence[EncodedImage]) -> torch.Tensor | None:
        """The images decoded and preprocessed: `[n, 3, H, W]` on the model's device, or None."""
        images = []
        for k, image in enumerate(encoded):
            try:
                images.append(image.decode())
            except ImageInputError as err:
                raise RequestError(str(err), param=request.image_names[k], code="invalid_image") from err
        try:
            return self.engine.encode_images(images)
        except ValueError as err:  # a text-only checkpoint
            raise RequestError(str(err), param="messages", code="invalid_image") from err

    def _check_stop_strings(self, stop: Sequence[str]) -> None:
        """Stop strings `generate` can match with this tokenizer (its preparation, cached by the
        library, is done here rather than in the batch worker)."""
        if not stop:
            return
        try:
            StopStringCriteria(self.engine.tokenizer, list(stop))
        except ValueError as err:
            raise RequestError(f"stop: {err}", param="stop", code="invalid_stop") from err

    def _read_image(self, request: ChatRequest, k: int, fetched: bytes | None) -> EncodedImage:
        name = request.image_names[k]
        try:
            return read_image_input(request.images[k], self.policy, name, fetched)
        except TooManyPixelsError as err:
            raise RequestError(f"{err} (--max-image-pixels)", param=name, code="image_too_large") from err
        except ImageInputError as err:
            raise RequestError(str(err), param=name, code="invalid_image") from err

    def _check_request_pixels(self, request: ChatRequest, images: Sequence[EncodedImage]) -> None:
        total = 0
        for k, image in enumerate(images):
            total += image.pixels
            if total > self.limits.max_request_pixels:
                raise RequestError(
                    f"the request's images hold over {self.limits.max_request_pixels:,} pixels together "
                    f"(--max-request-pixels); {request.image_names[k]} ({image.size[0]}x{image.size[1]}) "
                    "crosses the limit",
                    param=request.image_names[k],
                    code="image_too_large",
                )

    def submit(
        self,
        prompt: list[int],
        pixels: torch.Tensor | None,
        settings: DecodingSettings,
        cancelled: threading.Event,
        on_delta: DeltaCallback | None = None,
    ) -> Future[Completion]:
        """The scheduler's future for one request (503 once the server is shutting down)."""
        try:
            return self.scheduler.submit(prompt, pixels, settings, on_delta, cancelled)
        except RuntimeError as err:
            raise RequestError(str(err), status=503, code="shutting_down", type="server_error") from err
