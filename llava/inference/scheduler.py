"""Dynamic batching: requests that arrive together share one `generate` call.

A single worker thread owns the model. It takes the first waiting request, gathers the ones that
arrive within `max_wait_s` (and every one that queued while the previous batch ran) up to
`max_batch_size`, and runs each group of equal decoding settings as one left-padded batch. A
greedy answer is the one its request gets alone (left-padding equivalence of the models).

A request can be cancelled (its client left): its `threading.Event` is checked after every
generation step, and its row stops there while the rest of its batch goes on. A batch that fails
is answered again one request at a time, so that only the request at fault gets the error.
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


class GenerationCancelled(Exception):
    """A request cancelled (its client left, or the scheduler closed) before its answer was finished."""


@dataclass(eq=False)  # compared by identity
class Job:
    """A submitted request, as both schedulers hold it (`llava.inference.continuous` too)."""

    prompt: list[int]
    pixels: torch.Tensor | None  # [n, 3, H, W]
    settings: DecodingSettings
    on_delta: DeltaCallback | None
    cancelled: threading.Event
    future: Future[Completion] = field(default_factory=Future)
    streamed: bool = False  # some text went to `on_delta`

    def deliver(self, text: str) -> None:
        """`on_delta`, noting that the client has text."""
        self.streamed = True
        if self.on_delta is not None:
            self.on_delta(text)

    def drop(self) -> None:
        """End the request as cancelled."""
        self.cancelled.set()
        if not self.future.done():
            self.future.set_exception(GenerationCancelled("the request was cancelled"))


class QueueScheduler:
    """What both schedulers share: a queue of requests for `engine`, one worker thread that owns
    the model (`_loop`, the subclass's), the requests in flight, and how the scheduler closes.

    `batches` counts the batched forward passes (the subclass says which); `batch_sizes` holds the
    latest `HISTORY` batch sizes, in order; `cancelled` counts the requests cancelled before they
    finished. A subclass sets what its `_loop` reads before calling `__init__`, which starts it.
    """

    HISTORY = 1024
    kind = ""  # the `--scheduler` value
    thread_name = "llava-batcher"

    def __init__(self, engine: LoadedModel, max_batch_size: int = 16, max_wait_s: float = 0.01) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.cancelled = 0
        self.batch_sizes: deque[int] = deque(maxlen=self.HISTORY)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()  # guards `_closed`, `_cancelling` and `_in_flight`
        self._closed = self._cancelling = False
        self._in_flight: list[Job] = []  # taken from the queue, not yet answered
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def submit(
        self,
        prompt: Sequence[int],
        pixels: torch.Tensor | None,
        settings: DecodingSettings,
        on_delta: DeltaCallback | None = None,
        cancelled: threading.Event | None = None,
    ) -> Future[Completion]:
        """Queue one prompt; the future holds its completion (or its error). `on_delta` is called
        from the worker thread with each piece of streamed text. Setting `cancelled` stops the
        request after the current step: its future then holds `GenerationCancelled`."""
        job = Job(list(prompt), pixels, settings, on_delta, cancelled or threading.Event())
        with self._lock:
            if self._closed or not self._thread.is_alive():
                raise RuntimeError("the batch scheduler is closed")
            self._queue.put(job)
        return job.future

    def close(self, cancel: bool = False, timeout_s: float | None = None) -> None:
        """Stop the worker once the queued and running requests are finished, or, with `cancel`,
        once they are cancelled; waits at most `timeout_s` for it (None: no limit)."""
        with self._lock:
            self._closed = True
            if cancel:
                self._cancelling = True
                for job in self._in_flight:
                    job.cancelled.set()
                self._drop_queued()
            self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("the batch worker did not stop within %s s", timeout_s)

    def _drop_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._drop(job)

    def _drop(self, job: Job) -> None:
        self.cancelled += 1
        job.drop()

    def _loop(self) -> None:
        raise NotImplementedError


class BatchScheduler(QueueScheduler):
    """Request-level batching (`--scheduler request`): requests that arrive together share one
    `generate` call and run to its end. `batches` counts the `generate` calls."""

    kind = "request"

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
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
            groups: dict[DecodingSettings, list[Job]] = {}
            for job in jobs:
                if job.cancelled.is_set():
                    self._drop(job)
                elif job.future.set_running_or_notify_cancel():
                    groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                self._run(settings, group)

    def _run(self, settings: DecodingSettings, jobs: list[Job]) -> None:
        with self._lock:
            cancelling = self._cancelling
            if not cancelling:
                self._in_flight = jobs
        if cancelling:  # gathered while `close(cancel=True)` ran
            for job in jobs:
                self._drop(job)
            return
        self.batches += 1
        self.batch_sizes.append(len(jobs))
        start = time.perf_counter()
        failure: Exception | None = None
        try:
            completions = self.engine.complete(
                [job.prompt for job in jobs],
                [job.pixels for job in jobs],
                settings,
                [job.deliver if job.on_delta is not None else None for job in jobs],
                cancelled=[job.cancelled for job in jobs],
            )
        except Exception as err:  # answered below, outside this handler
            failure = err
        finally:
            with self._lock:
                self._in_flight = []
        if failure is not None:
            self._failed(settings, jobs, failure)
            return
        logger.debug("batch of %d answered in %.3f s", len(jobs), time.perf_counter() - start)
        for job, completion in zip(jobs, completions, strict=True):
            if job.cancelled.is_set():
                self._drop(job)
            else:
                job.future.set_result(completion)

    def _failed(self, settings: DecodingSettings, jobs: list[Job], err: Exception) -> None:
        """A failed request gets the error; a failed batch is answered again one request at a
        time (those not yet streamed from), so that one bad request cannot fail the others."""
        if len(jobs) == 1:
            logger.error("a request failed: %s", err, exc_info=err)
            jobs[0].future.set_exception(err)
            return
        logger.warning("a batch of %d requests failed (%s); answering them one at a time", len(jobs), err)
        for job in jobs:
            if job.streamed:  # its client has part of an answer: starting again would repeat it
                job.future.set_exception(err)
            else:
                self._run(settings, [job])
