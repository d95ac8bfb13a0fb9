"""The batch scheduler under cancellation and failure: a cancelled row stops while its batch goes
on, `close(cancel=True)` ends everything at once, and one bad request cannot fail its batch-mates."""

from __future__ import annotations

import threading
import time

import pytest

from llava.inference import DecodingSettings, LoadedModel, open_conversation
from llava.inference.scheduler import BatchScheduler, GenerationCancelled


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> LoadedModel:
    return LoadedModel.load(tiny_model_path, device="cpu")


def _prompts(engine, count: int) -> list[list[int]]:
    return [
        engine.prompt_ids(open_conversation("vicuna_v1", f"Tell me story number {i}")) for i in range(count)
    ]


def test_a_cancelled_row_stops_while_the_rest_of_its_batch_goes_on(engine):
    settings = DecodingSettings(max_new_tokens=48)
    prompts = _prompts(engine, 3)
    alone = [engine.complete([ids], [None], settings)[0] for ids in prompts]
    cancelled = threading.Event()
    completions = engine.complete(
        prompts,
        [None] * 3,
        settings,
        [lambda _: cancelled.set(), None, None],
        cancelled=[cancelled, None, None],
    )
    assert completions[0].completion_tokens < min(
        8, alone[0].completion_tokens
    )  # stopped after its first piece
    assert completions[1:] == alone[1:]


def test_the_scheduler_drops_cancelled_requests_and_cancels_everything_on_close(engine):
    prompts = _prompts(engine, 3)
    scheduler = BatchScheduler(engine, max_wait_s=0.2)
    try:
        early = threading.Event()
        early.set()  # cancelled before its batch starts: never generated
        dropped = scheduler.submit(prompts[0], None, DecodingSettings(max_new_tokens=4), cancelled=early)
        started = threading.Event()
        running = scheduler.submit(
            prompts[1], None, DecodingSettings(max_new_tokens=900), lambda _: started.set()
        )
        assert started.wait(timeout=60)
        queued = scheduler.submit(prompts[2], None, DecodingSettings(max_new_tokens=8))
        start = time.monotonic()
        scheduler.close(cancel=True, timeout_s=60)
        assert time.monotonic() - start < 10  # not the rest of 900 tokens, nor the queued request
        for future in (dropped, running, queued):
            with pytest.raises(GenerationCancelled):
                future.result(timeout=1)
        assert scheduler.cancelled == 3 and list(scheduler.batch_sizes) == [1]
    finally:
        scheduler.close()


def test_a_bad_request_fails_alone_and_its_batch_mates_get_their_answers(engine):
    settings = DecodingSettings(max_new_tokens=8)
    good = _prompts(engine, 2)
    alone = [engine.complete([ids], [None], settings)[0].text for ids in good]
    bad = engine.prompt_ids(open_conversation("vicuna_v1", "<image>\nWhat is it?"))  # no image given
    scheduler = BatchScheduler(engine, max_wait_s=0.5)
    try:
        streamed: list[str] = []
        futures = [
            scheduler.submit(good[0], None, settings, streamed.append),
            scheduler.submit(bad, None, settings),
            scheduler.submit(good[1], None, settings),
        ]
        with pytest.raises(ValueError, match="image"):
            futures[1].result(timeout=120)
        assert [futures[0].result(timeout=120).text, futures[2].result(timeout=120).text] == alone
        assert "".join(streamed) == alone[0]
        assert list(scheduler.batch_sizes) == [3, 1, 1, 1]  # the batch, then each request alone
    finally:
        scheduler.close()
