"""Continuous batching: requests join the running batch at the next decode step and leave it
when they end, instead of waiting for a whole batch (`llava.inference.scheduler`) to finish.

A single worker thread owns the model and a `DecodeBatch` (the rows in flight and their shared
KV cache; its docstring gives the layout and why). Each turn of its loop:

1. *admit*: the requests waiting (up to `max_batch_size` rows in flight; when the batch is
   empty, those arriving within `max_wait_s` of the first) are prefilled together in one
   left-padded forward pass; each gets its first token there and joins the batch;
2. *step*: one forward pass decodes every row on its newest token, each at its own position;
   every row picks its next token with its own settings (greedy, or sampled with its
   temperature and top-p), streams its text, and leaves the batch at its end token, its
   `max_new_tokens`, a stop string, or its cancellation.

Requests with any settings share the batch (the request-level scheduler batches only equal
ones). Beam search does not decode row by row: such a request is answered by its own `generate`
call between two steps (the rows in flight wait meanwhile). A greedy answer is the one the
request gets alone (`DecodeBatch`: same computation, other summation order). A prefill that
fails is retried one request at a time, so only the request at fault gets the error; a failed
decode step fails the rows in flight (one pass over all of them: none can be blamed).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass

import torch

from llava.inference.decode_batch import DecodeBatch
from llava.inference.decoding import Completion
from llava.inference.engine import LoadedModel
from llava.inference.rows import (
    LIBRARY_TOP_K,
    RowAnswer,
    check_generation_config,
    end_token_ids,
    next_tokens,
)
from llava.inference.scheduler import Job, QueueScheduler

logger = logging.getLogger(__name__)


@dataclass(eq=False)  # compared by identity
class _Row:
    job: Job
    answer: RowAnswer


class ContinuousScheduler(QueueScheduler):
    """Queues requests for `engine` and decodes them in one continuous batch from one worker thread.

    `batches` counts the forward passes that admitted requests (prefills, and beam-search
    `generate` calls); `steps` the decode steps; `batch_sizes` holds the rows of the latest
    `HISTORY` steps, in order; `cancelled` counts the requests cancelled before they finished.

    Raises:
        UnsupportedGenerationConfigError: the checkpoint's `generation_config` asks for logits
            processors this loop does not apply (`llava.inference.rows.check_generation_config`).
    """

    kind = "continuous"  # `--scheduler continuous`
    thread_name = "llava-continuous"

    def __init__(self, engine: LoadedModel, max_batch_size: int = 16, max_wait_s: float = 0.01) -> None:
        check_generation_config(engine.model)
        self.steps = 0
        self._end_ids = end_token_ids(engine.model, engine.tokenizer)
        self._top_k = engine.model.generation_config.top_k or LIBRARY_TOP_K
        self._batch = DecodeBatch(engine.model)  # its slots' owners are `_Row`s (worker thread only)
        super().__init__(engine, max_batch_size, max_wait_s)

    def _loop(self) -> None:
        closing = False
        while not (closing and not self._batch):
            if self._batch:
                jobs, closed = self._waiting(self.max_batch_size - len(self._batch), wait_s=0.0)
            else:
                first = self._queue.get()
                if first is None:
                    break
                jobs, closed = self._waiting(self.max_batch_size - 1, wait_s=self.max_wait_s)
                jobs.insert(0, first)
            closing = closing or closed
            try:
                self._admit(jobs)
                if self._batch:
                    self._step()
            except Exception as err:  # a failure no request can be blamed for: none is left waiting
                self._fail_all(err)

    def _waiting(self, room: int, wait_s: float) -> tuple[list[Job], bool]:
        """Up to `room` queued requests (those arriving within `wait_s` included), and whether
        `close` was called."""
        jobs: list[Job] = []
        deadline = time.monotonic() + wait_s
        while len(jobs) < room:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _admit(self, jobs: list[Job]) -> None:
        fresh = []
        for job in jobs:
            if job.cancelled.is_set():
                self._drop(job)
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            with self._lock:
                admitted = not self._cancelling  # else gathered while `close(cancel=True)` ran
                if admitted:
                    self._in_flight.append(job)
            if not admitted:
                self._drop(job)
            elif job.settings.num_beams > 1:
                self._answer_alone(job)
            else:
                fresh.append(job)
        if fresh:
            self._prefill(fresh)

    def _prefill(self, jobs: list[Job]) -> None:
        """Prefill `jobs` together and let those not finished by their first token join."""
        start = time.perf_counter()
        try:
            prefilled = self._batch.prefill([job.prompt for job in jobs], [job.pixels for job in jobs])
        except Exception as err:  # answered below, outside this handler
            failure = err
        else:
            failure = None
        if failure is not None:
            if len(jobs) == 1:
                logger.error("a request failed: %s", failure, exc_info=failure)
                self._settle(jobs[0], error=failure)
                return
            logger.warning(
                "a prefill of %d requests failed (%s); prefilling them one at a time", len(jobs), failure
            )
            for job in jobs:
                self._prefill([job])
            return
        self.batches += 1
        rows = [
            _Row(
                job,
                RowAnswer(
                    self.engine.tokenizer,
                    job.settings,
                    self.engine.prompt_length(job.prompt),
                    self._end_ids,
                    job.deliver if job.on_delta is not None else None,
                ),
            )
            for job in jobs
        ]
        tokens = next_tokens(prefilled.logits, [job.settings for job in jobs], self._top_k)
        owners = [None if self._advance(row, token) else row for row, token in zip(rows, tokens, strict=True)]
        self._batch.join(prefilled, owners, tokens)
        logger.debug("%d request(s) joined in %.3f s", len(jobs), time.perf_counter() - start)

    def _step(self) -> None:
        """One decode step of every row; the rows that end leave the batch."""
        cancelled = [slot for slot, row in self._batch.live() if row.job.cancelled.is_set()]
        for slot in cancelled:
            self._settle(self._batch.owners[slot].job)
        self._batch.leave(cancelled)
        live = self._batch.live()
        if not live:
            return
        slots = self._tensor([slot for slot, _ in live])
        logits = self._batch.step()[slots]  # [B, V]
        tokens = next_tokens(logits, [row.answer.settings for _, row in live], self._top_k)
        self.steps += 1
        self.batch_sizes.append(len(live))
        self._batch.tokens[slots] = self._tensor(tokens)
        self._batch.leave(
            [slot for (slot, row), token in zip(live, tokens, strict=True) if self._advance(row, token)]
        )

    def _tensor(self, tokens: list[int]) -> torch.Tensor:
        return torch.tensor(tokens, dtype=torch.long, device=self.engine.model.device)

    def _advance(self, row: _Row, token: int) -> bool:
        """Give `row` its next token; whether it has ended (and is answered)."""
        try:
            if not row.answer.push(token):
                return False
            completion = row.answer.finish()
        except Exception as err:  # its streaming callback failed: this request only
            logger.error("a request failed: %s", err, exc_info=err)
            self._settle(row.job, error=err)
            return True
        self._settle(row.job, completion)
        return True

    def _answer_alone(self, job: Job) -> None:
        """A beam-search request, by its own `generate` call."""
        self.batches += 1
        try:
            (completion,) = self.engine.complete(
                [job.prompt],
                [job.pixels],
                job.settings,
                [job.deliver] if job.on_delta is not None else None,
                cancelled=[job.cancelled],
            )
        except Exception as err:  # the request's own error
            logger.error("a request failed: %s", err, exc_info=err)
            self._settle(job, error=err)
            return
        self._settle(job, completion)

    def _settle(
        self, job: Job, completion: Completion | None = None, error: BaseException | None = None
    ) -> None:
        """Answer an admitted request: its error, its completion, or (cancelled, or neither
        given) `GenerationCancelled`."""
        with self._lock:
            self._in_flight.remove(job)
        if error is not None:
            job.future.set_exception(error)
        elif completion is None or job.cancelled.is_set():
            self._drop(job)
        else:
            job.future.set_result(completion)

    def _fail_all(self, err: Exception) -> None:
        """Fail every request admitted and not yet answered with `err` (a decode step or a join
        is one pass over all the rows: no single request to blame), and start from an empty batch."""
        with self._lock:
            jobs = list(self._in_flight)
        logger.error(
            "a batched forward pass failed; %d request(s) get its error: %s", len(jobs), err, exc_info=err
        )
        for job in jobs:
            self._settle(job, error=err)
        self._batch = DecodeBatch(self.engine.model)
