"""The server's two schedulers: continuous batching (the default) streams every row of its batch
on its own, and `--scheduler request` stays selectable, with the same greedy answers."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.serve.serve_helpers import long_question, own_server

LENGTHS = (3, 17, 6, 28)


def _plain(url: str, body: dict) -> str:
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def _streamed(url: str, body: dict) -> str:
    pieces = []
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120
    ) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:])["choices"]
                pieces += [choice["delta"].get("content") or "" for choice in choices]
    return "".join(pieces)


def _bodies(model_id: str) -> list[dict]:
    return [
        {**long_question(model_id, n), "messages": [{"role": "user", "content": f"Tell me story {i}"}]}
        for i, n in enumerate(LENGTHS)
    ]


def test_concurrent_streams_of_other_lengths_each_get_their_answer(api_server):
    bodies = _bodies(api_server.model_id)
    alone = [_plain(api_server.url, body) for body in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        streamed = list(pool.map(lambda body: _streamed(api_server.url, body), bodies))
    assert streamed == alone
    health = httpx.get(api_server.url + "/health").json()
    assert health["scheduler"] == "continuous" and health["steps"] > 0


def test_the_request_level_scheduler_stays_selectable(api_server, tiny_model_path, tmp_path):
    bodies = _bodies(api_server.model_id)
    continuous = [_plain(api_server.url, body) for body in bodies]
    with own_server(tiny_model_path, tmp_path / "server.log", "--scheduler", "request") as running:
        health = httpx.get(running.url + "/health").json()
        assert health["scheduler"] == "request" and "steps" not in health
        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: _plain(running.url, body), bodies))
    assert answers == continuous
