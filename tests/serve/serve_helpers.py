"""The server under test, its limits, and helpers shared by the server tests."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llava.serve.launch import RunningServer, server_process

MAX_BODY_BYTES = 200_000
MAX_IMAGES = 4
DEFAULT_MAX_TOKENS = 12  # the answer budget of a request without max_tokens


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT
    model_id: str
    log: Path
    pid: int

    @property
    def api(self) -> str:
        return self.url + "/v1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def own_server(model_path: str, log: Path, *flags: str) -> Iterator[RunningServer]:
    """A server of the test's own (one intra-op thread), stopped on leaving."""
    with server_process(Path(model_path), log, 1, *flags) as running:
        yield running


def exits_within(process: subprocess.Popen, seconds: float) -> bool:
    """Whether `process` exits within `seconds`."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def raw_request(port: int, data: bytes, wait_s: float) -> tuple[bytes, float]:
    """Send `data` on a fresh connection to 127.0.0.1:`port` and read until the server closes it
    (at most `wait_s` seconds); what came back, and after how long."""
    start = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received, time.monotonic() - start


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def long_question(model_id: str, max_tokens: int, **fields) -> dict:
    """A greedy text question whose answer runs to `max_tokens` on the tiny checkpoint."""
    return {
        "model": model_id,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **fields,
    }
