"""Serving throughput and latency: the OpenAI-compatible server under its two schedulers.

    python -m llava.bench.serving [--json] [--hidden-size 256 --layers 4 --max-tokens 64 --threads 1]

Three servers (`python -m llava.serve.api`) run on 127.0.0.1 over the same randomly initialised
Inverse-LLaVA checkpoint: continuous batching (`--scheduler continuous`), request-level batching
(`--scheduler request`), both up to 16 requests at once, and one request at a time (`--scheduler
request --max-batch-size 1`). They are started together and measured in turns, the two terms of
every ratio back to back. The official `openai` client sends greedy requests from threads:

- *equal lengths*: 1, 4 and 16 clients each asking `--requests-per-client` image questions (a
  data-URL PNG and a short question) for `--max-tokens` tokens; answers/s against one at a time;
- *mixed* (`llava.bench.serving_mixed`): 16 clients alternating short (`--short-tokens`) and long
  (`--long-tokens`) answers, half of them with images, in `--mixed-rounds` rounds, the two
  batching servers taking turns: answers/s, tokens/s and the p50/p95 latency of the short
  requests under this load, and of short requests sent alone to the idle server before each
  round. The greedy answers of the two schedulers are compared request by request;
- *forward costs*: in this process, on the servers' thread count, the prefill of one image
  question and a decode step of 1 and of 16 rows (what a short request's latency is made of).

Every figure is measured in one run, under the same conditions, which the result lists.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from llava.bench.serving_mixed import (
    MixedRun,
    forward_costs,
    image_question,
    percentiles,
    run_mixed,
    short_alone,
    summarize,
)
from llava.environment import describe_environment, environment_line
from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.serve.launch import server
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower

logger = logging.getLogger(__name__)

CLIENT_COUNTS = (1, 4, 16)
SCHEDULERS = {"continuous": "continuous", "request_level": "request"}  # result key -> --scheduler


def build_checkpoint(folder: Path, hidden_size: int, layers: int, seed: int = 0) -> Path:
    """A complete `fusion_llama` checkpoint with random weights (fusion branch included)."""
    llm, vision = (
        make_llm(folder, seed, hidden_size=hidden_size, num_layers=layers),
        make_vision_tower(folder, seed),
    )
    model, report = build_from_backbones("fusion_llama", str(llm), str(vision), fusion_dropout=0.0)
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in report.missing:
            params[name].copy_(torch.randn(params[name].shape, generator=generator) * 0.2)
    path = folder / "bench-fusion"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(llm).save_pretrained(path)
    load_image_processor(vision).save_pretrained(path)
    return path


def measure(url: str, clients: int, requests_per_client: int, max_tokens: int) -> dict[str, float]:
    """Answers/s (and generated tokens/s, mean prompt and answer lengths) of `clients` threads each
    asking `requests_per_client` image questions, one after the other."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id

    def ask(i: int) -> tuple[int, int]:
        reply = client.chat.completions.create(
            model=model, messages=image_question(i), max_tokens=max_tokens, temperature=0
        )
        return reply.usage.prompt_tokens, reply.usage.completion_tokens

    def one_client(c: int) -> tuple[int, int]:
        counts = [ask(c * requests_per_client + r) for r in range(requests_per_client)]
        return sum(p for p, _ in counts), sum(n for _, n in counts)

    ask(10_000)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        counts = list(pool.map(one_client, range(clients)))
    seconds = time.perf_counter() - start
    answers = clients * requests_per_client
    tokens = sum(n for _, n in counts)
    return {
        "answers_per_s": answers / seconds,
        "tokens_per_s": tokens / seconds,
        "mean_prompt_positions": sum(p for p, _ in counts) / answers,
        "mean_answer_tokens": tokens / answers,
    }


def _servers(args: argparse.Namespace, checkpoint: Path, folder: Path, stack: ExitStack) -> dict[str, str]:
    """The three servers, started together (each idle while another is measured): their URLs."""
    batching = ("--max-batch-size", "16", "--batch-wait-ms", str(args.batch_wait_ms))
    flags = {
        **{key: ("--scheduler", scheduler, *batching) for key, scheduler in SCHEDULERS.items()},
        "one_at_a_time": ("--scheduler", "request", "--max-batch-size", "1"),
    }
    return {
        key: stack.enter_context(server(checkpoint, folder / f"{key}.log", args.threads, *options))
        for key, options in flags.items()
    }


def _measure_all(args: argparse.Namespace, urls: dict[str, str], results: dict) -> dict[str, list[MixedRun]]:
    """Every measurement, each ratio's terms back to back (the machine's load drifts); the mixed
    workload's runs of each scheduler."""
    for clients in CLIENT_COUNTS:
        order = ["continuous", "one_at_a_time", "request_level"] if clients == 16 else list(SCHEDULERS)
        for key in order:
            figures = measure(urls[key], clients, args.requests_per_client, args.max_tokens)
            results[f"{key}_{clients}_clients"] = figures
            logger.info("%s, %2d client(s): %.2f answers/s", key, clients, figures["answers_per_s"])
    runs: dict[str, list[MixedRun]] = {key: [] for key in SCHEDULERS}
    alone: dict[str, list[float]] = {key: [] for key in SCHEDULERS}
    for round_ in range(args.mixed_rounds):
        for key in list(SCHEDULERS)[:: 1 if round_ % 2 == 0 else -1]:  # ABBA: turns cancel a drift
            alone[key] += short_alone(urls[key], args.alone_requests, args.short_tokens)
            runs[key].append(
                run_mixed(urls[key], args.mixed_requests_per_client, args.short_tokens, args.long_tokens)
            )
            logger.info("%s, mixed round %d: %.1f s", key, round_ + 1, runs[key][-1].seconds)
    for key in SCHEDULERS:
        results[f"mixed_{key}"] = summarize(runs[key])
        results[f"short_alone_{key}"] = percentiles(alone[key])
    return runs


def run(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        checkpoint = build_checkpoint(folder, args.hidden_size, args.layers)
        image_positions = AutoConfig.from_pretrained(checkpoint).num_image_tokens
        results: dict = {}
        runs = _measure_all(args, _servers(args, checkpoint, folder, stack), results)
        results["forward_costs"] = forward_costs(checkpoint, args.threads)
    single = results["one_at_a_time_16_clients"]["answers_per_s"]
    for key in SCHEDULERS:
        results[f"speedup_16_clients_{key}"] = results[f"{key}_16_clients"]["answers_per_s"] / single
    results["continuous_vs_request_level_mixed"] = (
        results["mixed_continuous"]["answers_per_s"] / results["mixed_request_level"]["answers_per_s"]
    )
    results["short_p95_under_load_over_alone"] = (
        results["mixed_continuous"]["short_p95_s"] / results["short_alone_continuous"]["p95_s"]
    )
    pairs = [
        pair
        for first, second in zip(runs["continuous"], runs["request_level"], strict=True)
        for pair in zip(first.answers, second.answers, strict=True)
    ]
    results["mixed_answers_identical"] = sum(a.text == b.text for a, b in pairs)
    results["mixed_answers"] = len(pairs)
    results["conditions"] = {
        "server_threads": args.threads,
        "hidden_size": args.hidden_size,
        "layers": args.layers,
        "image_positions": image_positions,
        "max_tokens": args.max_tokens,
        "requests_per_client": args.requests_per_client,
        "short_tokens": args.short_tokens,
        "long_tokens": args.long_tokens,
        "mixed_requests_per_client": args.mixed_requests_per_client,
        "mixed_rounds": args.mixed_rounds,
        "alone_requests": args.alone_requests,
        "batch_wait_ms": args.batch_wait_ms,
        "cpus": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
        "environment": environment_line(describe_environment()),
    }
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="answer length of the equal-length workload"
    )
    parser.add_argument("--requests-per-client", type=int, default=4, help="equal-length workload")
    parser.add_argument("--short-tokens", type=int, default=4, help="mixed workload: a short answer")
    parser.add_argument("--long-tokens", type=int, default=128, help="mixed workload: a long answer")
    parser.add_argument("--mixed-requests-per-client", type=int, default=8)
    parser.add_argument(
        "--mixed-rounds", type=int, default=4, help="mixed workload runs per server, taking turns"
    )
    parser.add_argument(
        "--alone-requests", type=int, default=8, help="short requests timed on the idle server, per round"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each server")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    return parser.parse_args(argv)


def _report(result: dict) -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()
            )
        logger.info("%-34s %s", key, f"{value:.2f}" if isinstance(value, float) else value)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "transformers"):  # one line per request / per load otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        _report(result)
    return result


if __name__ == "__main__":
    main()
