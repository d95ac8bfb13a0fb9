"""Soak: the server under a mix of good, malformed, dropped and slow requests for a while.

    python -m llava.bench.soak [--duration 300] [--clients 16] [--model-path CKPT] [--json]

One server (`python -m llava.serve.api`, 127.0.0.1, short header and body deadlines) on a random
Inverse-LLaVA checkpoint (or `--model-path`). First each good question is asked alone, one at a
time: its answer is the reference. Then `--clients` threads send, until `--duration` is over:

- good requests (plain and streamed; with a PNG or text only), whose answers must equal their
  one-at-a-time answers;
- malformed ones (not JSON, nested 100,000 deep, a 5000-digit number, a lone surrogate, a
  12000 x 12000 PNG of 140 KB, bad base64, an unknown model, a body over the limit, a
  cross-origin `text/plain` POST, a foreign Host), which must get their 4xx;
- dropped ones (a stream left after its first piece, a plain request given up after 0.3 s);
- slow ones (headers that never end, a body that stops halfway: 408 at the deadline; a body sent
  in pieces within it: the good answer).

It passes when every good answer equals its reference, no response is a 5xx, every malformed or
slow request gets its expected status, and the server's resident memory (RSS, from /proc) at the
end is within `--rss-tolerance` (10%) of what it was after the warm-up. The figures and the
conditions are printed (or one JSON object).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llava.bench.soak_traffic import (
    DEADLINE_S,
    KIND_WEIGHTS,
    MAX_BODY_BYTES,
    MAX_TOKENS,
    Outcome,
    Soak,
    Tally,
)
from llava.environment import describe_environment, environment_line
from llava.serve.launch import RunningServer, rss_bytes, server_process

logger = logging.getLogger(__name__)


def _drive(soak: Soak, clients: int, seconds: float, tally: Tally, sample: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                tally.add(soak.one())
            except Exception as err:  # a transport failure is a finding, not a crash of the soak
                tally.add(Outcome("error", type(err).__name__, 0, False, str(err)[:200]))

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        while any(not f.done() for f in futures):
            sample()
            time.sleep(0.5)


def _wait_idle(soak: Soak, timeout_s: float = 60.0) -> None:
    """Until two /health reads a second apart see the same work done: batches admitted, and decode
    steps (which continuous batching runs without admitting anything)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        health = soak.client.get(soak.url + "/health").json()
        done = (health["batches"], health.get("steps"))  # `steps`: the continuous scheduler only
        if done == last:
            return
        last = done
        time.sleep(1.0)


def soak_server(running: RunningServer, duration_s: float, clients: int, seed: int, warmup_s: float) -> dict:
    """Drive `running` for `duration_s` after a `warmup_s` warm-up; the figures and the verdict."""
    model = json.loads(_get(running.url + "/health"))["model"]
    soak = Soak(running.url, model, seed)
    pid = running.process.pid
    try:
        rss_loaded = rss_bytes(pid)
        soak.ask_alone()
        _drive(soak, clients, warmup_s, Tally(), lambda: None)
        _wait_idle(soak)
        rss_start = rss_bytes(pid)
        peak = [rss_start]
        tally = Tally()
        start = time.perf_counter()
        _drive(soak, clients, duration_s, tally, lambda: peak.append(rss_bytes(pid)))
        seconds = time.perf_counter() - start
        _wait_idle(soak)
        rss_end = rss_bytes(pid)
        cancelled = json.loads(_get(running.url + "/health"))["cancelled"]
    finally:
        soak.close()
    return _figures(tally.outcomes, seconds, rss_loaded, rss_start, max(peak), rss_end, cancelled)


def _get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=30).text


def _figures(
    outcomes: list[Outcome],
    seconds: float,
    rss_loaded: int,
    rss_start: int,
    rss_peak: int,
    rss_end: int,
    cancelled: int,
) -> dict:
    good = sorted(o.seconds for o in outcomes if o.kind == "good" and o.ok)
    failures = [o for o in outcomes if not o.ok]
    return {
        "seconds": seconds,
        "requests": len(outcomes),
        "requests_per_s": len(outcomes) / seconds,
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "by_status": {str(k): v for k, v in sorted(Counter(o.status for o in outcomes).items())},
        "server_errors": sum(o.status >= 500 for o in outcomes),
        "failures": len(failures),
        "first_failures": [f"{o.kind}/{o.variant}: {o.status} {o.detail}" for o in failures[:10]],
        "good_answers": len(good),
        "good_p50_s": good[len(good) // 2] if good else None,
        "good_p95_s": good[int(len(good) * 0.95)] if good else None,
        "generations_cancelled": cancelled,
        "rss_mib_loaded": rss_loaded / 2**20,
        "rss_mib_start": rss_start / 2**20,
        "rss_mib_peak": rss_peak / 2**20,
        "rss_mib_end": rss_end / 2**20,
        "rss_change": rss_end / rss_start - 1,
    }


def server_flags() -> list[str]:
    deadline = f"{DEADLINE_S:g}"
    return [
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--header-timeout-s",
        deadline,
        "--body-timeout-s",
        deadline,
        "--batch-wait-ms",
        "10",
    ]


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        folder = Path(tmp)
        if args.model_path:
            checkpoint = Path(args.model_path)
        else:
            from llava.bench.serving import build_checkpoint

            checkpoint = build_checkpoint(folder, args.hidden_size, args.layers)
        with server_process(checkpoint, folder / "server.log", args.threads, *server_flags()) as running:
            figures = soak_server(running, args.duration, args.clients, args.seed, args.warmup)
    figures["passed"] = (
        figures["failures"] == 0
        and figures["server_errors"] == 0
        and figures["rss_change"] <= args.rss_tolerance
    )
    figures["conditions"] = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "clients": args.clients,
        "kinds": KIND_WEIGHTS,
        "max_tokens": MAX_TOKENS,
        "header_and_body_deadline_s": DEADLINE_S,
        "checkpoint": args.model_path or f"random: hidden {args.hidden_size}, {args.layers} layers",
        "server_threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "environment": environment_line(describe_environment()),
    }
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of soak after the warm-up")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of the same mix before measuring")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model-path", default=None, help="a checkpoint (default: a random one)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rss-tolerance", type=float, default=0.10, help="allowed growth of the server's RSS"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            logger.info("%-22s %s", key, f"{value:.3f}" if isinstance(value, float) else value)
    if not result["passed"]:
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
