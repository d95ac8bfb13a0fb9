"""Serving throughput: answers/s of the OpenAI-compatible server with 1, 4 and 16 concurrent
clients, and the speedup of dynamic batching over answering one request at a time.

    python -m llava.bench.serving [--json] [--hidden-size 512 --layers 8 --max-tokens 32 --threads 1]

Two servers (`python -m llava.serve.api`) run on 127.0.0.1 over the same randomly initialised
Inverse-LLaVA checkpoint, one batching up to 16 requests per `generate` call and one with
`--max-batch-size 1`; the official `openai` client sends greedy image questions (a data-URL PNG and
a short question) from N threads at once. Both servers are measured in one run, under the same
conditions, which the result lists.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer

from llava.model.builder import build_from_backbones
from llava.model.vision_tower import load_image_processor
from llava.serve.launch import server
from llava.tools.make_tiny_checkpoints import make_llm, make_vision_tower

logger = logging.getLogger(__name__)

CLIENT_COUNTS = (1, 4, 16)


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


def _image_url(seed: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (37 * seed % 256, 91 * seed % 256, 53 * seed % 256)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def measure(url: str, clients: int, requests_per_client: int, max_tokens: int) -> dict[str, float]:
    """Answers/s (and generated tokens/s, mean prompt and answer lengths) of `clients` threads each
    asking `requests_per_client` questions, one after the other."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id

    def ask(i: int) -> tuple[int, int]:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _image_url(i)}},
                    {"type": "text", "text": f"Question {i}: what is in the image?"},
                ],
            }
        ]
        reply = client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0
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


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        checkpoint = build_checkpoint(folder, args.hidden_size, args.layers)
        results: dict = {
            "threads": args.threads,
            "hidden_size": args.hidden_size,
            "layers": args.layers,
            "image_positions": AutoConfig.from_pretrained(checkpoint).num_image_tokens,
            "max_tokens": args.max_tokens,
            "requests_per_client": args.requests_per_client,
        }
        batched_flags = ("--max-batch-size", "16", "--batch-wait-ms", str(args.batch_wait_ms))
        with server(checkpoint, folder / "batched.log", args.threads, *batched_flags) as url:
            for clients in CLIENT_COUNTS:
                results[f"batched_{clients}_clients"] = measure(
                    url, clients, args.requests_per_client, args.max_tokens
                )
                logger.info(
                    "batched, %2d client(s): %.2f answers/s",
                    clients,
                    results[f"batched_{clients}_clients"]["answers_per_s"],
                )
        with server(checkpoint, folder / "single.log", args.threads, "--max-batch-size", "1") as url:
            results["one_at_a_time_16_clients"] = measure(url, 16, args.requests_per_client, args.max_tokens)
            logger.info(
                "one at a time, 16 clients: %.2f answers/s",
                results["one_at_a_time_16_clients"]["answers_per_s"],
            )
    results["speedup_16_clients"] = (
        results["batched_16_clients"]["answers_per_s"] / results["one_at_a_time_16_clients"]["answers_per_s"]
    )
    results["speedup_16_over_1_client"] = (
        results["batched_16_clients"]["answers_per_s"] / results["batched_1_clients"]["answers_per_s"]
    )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length asked for")
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each server")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "transformers"):  # one line per request / per load otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v:.2f}" for k, v in value.items())
            logger.info("%-26s %s", key, f"{value:.2f}" if isinstance(value, float) else value)
    return result


if __name__ == "__main__":
    main()
