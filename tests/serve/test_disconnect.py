"""A client that hangs up cancels its generation, streamed or not: the batch worker is free for
the next request at once instead of generating to max_tokens for nobody."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.serve.serve_helpers import long_question

LONG = 900  # tokens: several seconds of generation on the tiny checkpoint


@pytest.fixture(scope="module")
def full_generation_s(api_server) -> float:
    """How long the long answer takes when nobody leaves."""
    start = time.monotonic()
    response = httpx.post(
        api_server.api + "/chat/completions", json=long_question(api_server.model_id, LONG), timeout=300
    )
    seconds = time.monotonic() - start
    assert response.json()["usage"]["completion_tokens"] == LONG  # the answer really runs that long
    return seconds


def _cancelled(api_server) -> int:
    return httpx.get(api_server.url + "/health").json()["cancelled"]


def _next_answer_s(api_server) -> float:
    start = time.monotonic()
    response = httpx.post(
        api_server.api + "/chat/completions", json=long_question(api_server.model_id, 2), timeout=300
    )
    assert response.status_code == 200
    return time.monotonic() - start


def _wait_for_cancelled(api_server, count: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _cancelled(api_server) >= count:
            return True
        time.sleep(0.1)
    return False


def test_a_stream_left_after_its_first_piece_stops_generating(api_server, full_generation_s):
    before = _cancelled(api_server)
    body = long_question(api_server.model_id, LONG, stream=True)
    with httpx.stream("POST", api_server.api + "/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # the first piece of text: hang up
    assert _next_answer_s(api_server) < full_generation_s / 3
    assert _wait_for_cancelled(api_server, before + 1)


def test_a_client_giving_up_on_a_plain_request_stops_its_generation(api_server, full_generation_s):
    before = _cancelled(api_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            api_server.api + "/chat/completions", json=long_question(api_server.model_id, LONG), timeout=0.5
        )
    assert _wait_for_cancelled(api_server, before + 1, timeout_s=full_generation_s / 3)
    assert _next_answer_s(api_server) < full_generation_s / 3
