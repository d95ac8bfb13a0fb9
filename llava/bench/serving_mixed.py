"""The serving benchmark's mixed workload: short and long answers, with and without images.

16 client threads each send `requests_per_client` greedy requests one after the other. Client
`c`'s request `r` asks for a short answer (`short_tokens`) when `c + r` is even and a long one
(`long_tokens`) otherwise, so every client alternates and at any time about half the requests in
flight are short; clients with an even `c` send an image (a 48x40 PNG as a data URL) with their
question, the others text only. The same requests go to each server, so their greedy answers can
be compared one by one. A run is repeated in rounds, the servers taking turns (ABBA), and the
figures pool the rounds, so that a drift in the machine's load weighs on both alike.
"""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLIENTS = 16


def image_url(seed: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (37 * seed % 256, 91 * seed % 256, 53 * seed % 256)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_question(i: int) -> list[dict]:
    """Messages of question `i` about an image of its own."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url(i)}},
                {"type": "text", "text": f"Question {i}: what is in the image?"},
            ],
        }
    ]


def text_question(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: tell me a story about the number {i}."}]


@dataclass(frozen=True)
class MixedRequest:
    index: int
    short: bool
    image: bool
    max_tokens: int

    def messages(self) -> list[dict]:
        return image_question(self.index) if self.image else text_question(self.index)


def mixed_request(
    client: int, r: int, requests_per_client: int, short_tokens: int, long_tokens: int
) -> MixedRequest:
    short = (client + r) % 2 == 0
    return MixedRequest(
        client * requests_per_client + r, short, client % 2 == 0, short_tokens if short else long_tokens
    )


@dataclass(frozen=True)
class Answer:
    request: MixedRequest
    seconds: float
    tokens: int
    text: str


def _client(url: str):
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    return client, client.models.list().data[0].id


def _ask(client, model: str, request: MixedRequest) -> Answer:
    start = time.perf_counter()
    reply = client.chat.completions.create(
        model=model, messages=request.messages(), max_tokens=request.max_tokens, temperature=0
    )
    seconds = time.perf_counter() - start
    return Answer(request, seconds, reply.usage.completion_tokens, reply.choices[0].message.content)


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 (linear interpolation between the closest ranks)."""
    p50, p95 = np.percentile(seconds, [50, 95])
    return {"p50_s": float(p50), "p95_s": float(p95)}


@dataclass(frozen=True)
class MixedRun:
    answers: list[Answer]  # in request order
    seconds: float


def run_mixed(url: str, requests_per_client: int, short_tokens: int, long_tokens: int) -> MixedRun:
    """The mixed workload once on the server at `url` (after a warm-up): every answer and the time."""
    client, model = _client(url)
    for request in (mixed_request(c, 0, 1, short_tokens, long_tokens) for c in range(2)):
        _ask(client, model, request)  # warm-up: one image request, one text request

    def one_client(c: int) -> list[Answer]:
        return [
            _ask(client, model, mixed_request(c, r, requests_per_client, short_tokens, long_tokens))
            for r in range(requests_per_client)
        ]

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for answers in pool.map(one_client, range(CLIENTS)) for answer in answers]
    seconds = time.perf_counter() - start
    return MixedRun(sorted(answers, key=lambda a: a.request.index), seconds)


def summarize(runs: list[MixedRun]) -> dict[str, float]:
    """Answers/s and generated tokens/s over `runs` together, and the latencies of each kind."""
    answers = [answer for run in runs for answer in run.answers]
    seconds = sum(run.seconds for run in runs)
    short = [a for a in answers if a.request.short]
    long = [a for a in answers if not a.request.short]
    return {
        "answers_per_s": len(answers) / seconds,
        "tokens_per_s": sum(a.tokens for a in answers) / seconds,
        **{f"short_{k}": v for k, v in percentiles([a.seconds for a in short]).items()},
        **{f"long_{k}": v for k, v in percentiles([a.seconds for a in long]).items()},
        "mean_short_answer_tokens": sum(a.tokens for a in short) / len(short),
        "mean_long_answer_tokens": sum(a.tokens for a in long) / len(long),
    }


def short_alone(url: str, count: int, short_tokens: int) -> list[float]:
    """Seconds of `count` short requests sent one at a time to an idle server (half with an image)."""
    client, model = _client(url)
    requests = [MixedRequest(10_000 + i, True, i % 2 == 0, short_tokens) for i in range(count)]
    _ask(client, model, requests[0])  # warm-up
    return [_ask(client, model, request).seconds for request in requests]


def forward_costs(checkpoint: Path, threads: int, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of the forward passes behind a short request's latency, in this process
    on `threads` threads: the prefill of one image question, and a decode step of 1 and of
    `CLIENTS` rows (each row at 67 + 64 positions)."""
    from llava.inference import LoadedModel, open_conversation, with_image_tokens
    from llava.inference.decode_batch import DecodeBatch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engine = LoadedModel.load(str(checkpoint), device="cpu")
        question = image_question(0)[0]["content"][1]["text"]
        prompt = engine.prompt_ids(open_conversation("vicuna_v1", with_image_tokens(question, 1)))
        pixels = engine.encode_images([Image.new("RGB", (48, 40), "red")])
        batch = DecodeBatch(engine.model)
        costs = {
            "prefill_one_image_question_ms": _median_ms(lambda: batch.prefill([prompt], [pixels]), repeats)
        }
        for rows in (1, CLIENTS):
            batch = DecodeBatch(engine.model)
            prefilled = batch.prefill([prompt] * rows, [pixels] * rows)
            batch.join(prefilled, list(range(rows)), prefilled.logits.argmax(dim=-1).tolist())
            for _ in range(64):
                batch.step()
            costs[f"step_{rows}_rows_ms"] = _median_ms(batch.step, repeats)
        return costs
    finally:
        torch.set_num_threads(previous)


def _median_ms(work, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.median(seconds))
