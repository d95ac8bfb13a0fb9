"""Starting and stopping the OpenAI-compatible server as its users do, on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

MAX_BODY_BYTES = 200_000
MAX_IMAGES = 4


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT
    model_id: str
    process: subprocess.Popen
    log: Path

    @property
    def api(self) -> str:
        return self.url + "/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_path: str, log: Path, *flags: str, timeout_s: float = 90.0) -> Server:
    """`python -m llava.serve.api` on a free 127.0.0.1 port, ready (its /health answers)."""
    port = free_port()
    command = [sys.executable, "-m", "llava.serve.api", "--model-path", model_path, "--device", "cpu"]
    command += ["--port", str(port), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = log.open("w")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{log.read_text()}")
        try:
            health = httpx.get(url + "/health", timeout=2).json()
            return Server(url, health["model"], process, log)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout_s} s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
