"""The OpenAI-compatible server (`python -m llava.serve.api`) started in a subprocess on a free
127.0.0.1 port, for the serving benchmarks and the server tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen


@contextmanager
def server(model_path: Path, log: Path, threads: int, *flags: str, timeout_s: float = 120.0) -> Iterator[str]:
    """`python -m llava.serve.api` on a free 127.0.0.1 port; yields its base URL once /health answers."""
    with server_process(model_path, log, threads, *flags, timeout_s=timeout_s) as running:
        yield running.url


@contextmanager
def server_process(
    model_path: Path, log: Path, threads: int, *flags: str, timeout_s: float = 120.0
) -> Iterator[RunningServer]:
    """As `server`, yielding the process too; it is stopped (SIGTERM, then SIGKILL after 20 s)
    on leaving, unless it has already exited."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "llava.serve.api", "--model-path", str(model_path), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), *flags], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited ({process.returncode}); see {log}")
            try:
                httpx.get(url + "/health", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start within {timeout_s} s; see {log}") from None
                time.sleep(0.2)
        yield RunningServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux: /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
