"""Dynamic batching: requests that arrive together share one `generate` call.

A single worker thread owns the model. It takes the first waiting request, gathers the ones that
arrive within `max_wait_s` (and every one that queued while the previous batch ran) up to
`max_batch_size`, and runs each group of equal decoding settings as one left-padded batch. A
greedy answer is the one its request gets alone (left-padding equivalence of the models).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from llava.inference.decoding import Completion, DecodingSettings
from llava.inference.engine import LoadedModel
from llava.inference.streaming import DeltaCallback

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    prompt: list[int]
    pixels: torch.Tensor | None  # [n, 3, H, W]
    settings: DecodingSettings
    on_delta: DeltaCallback | None
    future: Future[Completion] = field(default_factory=Future)


class BatchScheduler:
    """Queues requests for `engine` and answers them in batches from one worker thread.

    `batches` counts the `generate` calls made; `batch_sizes` holds the sizes of the latest
    `HISTORY` of them, in order.
    """

    HISTORY = 1024

    def __init__(self, engine: LoadedModel, max_batch_size: int = 16, max_wait_s: float = 0.01) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.batch_sizes: deque[int] = deque(maxlen=self.HISTORY)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="llava-batcher", daemon=True)
        self._thread.start()

    def submit(
        self,
        prompt: Sequence[int],
        pixels: torch.Tensor | None,
        settings: DecodingSettings,
        on_delta: DeltaCallback | None = None,
    ) -> Future[Completion]:
        """Queue one prompt; the future holds its completion (or the error of its batch).
        `on_delta` is called from the worker thread with each piece of streamed text."""
        if not self._thread.is_alive():
            raise RuntimeError("the batch scheduler is closed")
        job = _Job(list(prompt), pixels, settings, on_delta)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish the queued requests, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` and the requests arriving within the wait, and whether `close` was called."""
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _loop(self) -> None:
        closing = False
        while not closing:
            first = self._queue.get()
            if first is None:
                break
            jobs, closing = self._gather(first)
            groups: dict[DecodingSettings, list[_Job]] = {}
            for job in jobs:
                if job.future.set_running_or_notify_cancel():
                    groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                self._run(settings, group)

    def _run(self, settings: DecodingSettings, jobs: list[_Job]) -> None:
        self.batches += 1
        self.batch_sizes.append(len(jobs))
        start = time.perf_counter()
        try:
            completions = self.engine.complete(
                [job.prompt for job in jobs],
                [job.pixels for job in jobs],
                settings,
                [job.on_delta for job in jobs],
            )
        except Exception as err:  # every request of the batch gets the error
            logger.exception("a batch of %d request(s) failed", len(jobs))
            for job in jobs:
                job.future.set_exception(err)
            return
        logger.debug("batch of %d answered in %.3f s", len(jobs), time.perf_counter() - start)
        for job, completion in zip(jobs, completions, strict=True):
            job.future.set_result(completion)
