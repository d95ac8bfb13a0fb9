"""Deadlines: request headers and bodies that do not arrive in time are answered 408, and SIGTERM
stops the server within its shutdown deadline even while a client holds a half-sent body and a
generation runs."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from tests.serve.serve_helpers import exits_within, long_question, own_server, raw_request

HEADER_TIMEOUT_S = BODY_TIMEOUT_S = 1.0
SHUTDOWN_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def impatient_server(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("impatient") / "server.log"
    flags = ["--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S)]
    with own_server(tiny_model_path, log, *flags) as running:
        yield running


def _port(running) -> int:
    return int(running.url.rsplit(":", 1)[1])


def _half_sent_body(port: int) -> tuple[bytes, bytes]:
    body = json.dumps(long_question("tiny-fusion", 4)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body[: len(body) // 2]


def test_headers_that_never_end_are_cut_at_the_deadline(impatient_server):
    partial = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app"
    received, seconds = raw_request(_port(impatient_server), partial, wait_s=HEADER_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert seconds < HEADER_TIMEOUT_S + 3


def test_a_body_that_stops_halfway_gets_408(impatient_server):
    head, half = _half_sent_body(_port(impatient_server))
    received, seconds = raw_request(_port(impatient_server), head + half, wait_s=BODY_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_timeout"
    assert seconds < BODY_TIMEOUT_S + 3
    ok = httpx.post(impatient_server.url + "/v1/chat/completions", json=long_question("tiny-fusion", 2))
    assert ok.status_code == 200


def test_sigterm_stops_the_server_within_its_deadline(tiny_model_path, tmp_path):
    flags = ["--shutdown-timeout-s", str(SHUTDOWN_TIMEOUT_S), "--body-timeout-s", "120"]
    with own_server(tiny_model_path, tmp_path / "server.log", *flags) as running:
        port = _port(running)
        generating = threading.Event()
        streaming = threading.Thread(target=_stream_long_answer, args=(running.url, generating), daemon=True)
        streaming.start()
        assert generating.wait(timeout=60)
        head, half = _half_sent_body(port)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as holder:
            holder.sendall(head + half)  # and never the rest
            httpx.get(running.url + "/health", timeout=10)  # the server has read what arrived
            running.process.terminate()  # SIGTERM
            assert exits_within(running.process, SHUTDOWN_TIMEOUT_S + 15), "SIGTERM did not stop the server"
        streaming.join(timeout=30)
    assert "timeout graceful shutdown exceeded" in (tmp_path / "server.log").read_text()


def _stream_long_answer(url: str, generating: threading.Event) -> None:
    """A long streamed answer, read until the server goes away; `generating` is set at its first line."""
    body = long_question("tiny-fusion", 900, stream=True)
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
            for _ in response.iter_lines():
                generating.set()
    except httpx.TransportError:
        pass
