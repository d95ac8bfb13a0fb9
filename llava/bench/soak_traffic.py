"""The soak benchmark's traffic (`llava.bench.soak`): what one client sends and how each answer
is judged. Good requests (plain and streamed, with a PNG or text only) must get their
one-at-a-time answers; malformed ones their 4xx; dropped ones are given up early; slow ones
send headers or bodies too slowly for the server's deadlines."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from PIL import Image

from llava.data.toy import grey_png

logger = logging.getLogger(__name__)

MAX_TOKENS = 16
MAX_BODY_BYTES = 1_000_000
DEADLINE_S = 2.0  # the server's header and body deadlines
KIND_WEIGHTS = {"good": 50, "bad": 25, "dropped": 15, "slow": 10}


@dataclass(frozen=True)
class Outcome:
    """One request's result: its kind and variant, the HTTP status (0: none, the client left),
    whether it met expectations, and why not."""

    kind: str
    variant: str
    status: int
    ok: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


# ---- request bodies --------------------------------------------------------------------------


def _png_url(seed: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (37 * seed % 256, 91 * seed % 256, 53 * seed % 256)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def good_questions(model: str, count: int = 8) -> list[dict]:
    """`count` greedy questions: even ones with a PNG, odd ones text only."""
    bodies = []
    for i in range(count):
        text = f"Question {i}: what is in the picture?"
        content = (
            [{"type": "image_url", "image_url": {"url": _png_url(i)}}, {"type": "text", "text": text}]
            if i % 2 == 0
            else text
        )
        messages = [{"role": "user", "content": content}]
        bodies.append({"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0})
    return bodies


def bad_requests(model: str) -> dict[str, tuple[bytes, dict[str, str], int]]:
    """Malformed requests by name: (body, extra headers, expected status)."""
    hi = [{"role": "user", "content": "hi"}]

    def body(**fields) -> bytes:
        return json.dumps({"model": model, "messages": hi, **fields}).encode()

    bomb = "data:image/png;base64," + base64.b64encode(grey_png(12000, 12000)).decode()
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb}}]}]
    bad_base64 = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:;base64,@@"}}]}
    ]
    return {
        "not JSON": (b"{not json", {}, 400),
        "nested 100000 deep": (b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400),
        "5000-digit integer": (body()[:-1] + b', "max_tokens": ' + b"9" * 5000 + b"}", {}, 400),
        "lone surrogate": (body().replace(b'"hi"', b'"hi \\ud800"'), {}, 400),
        "pixel bomb": (json.dumps({"model": model, "messages": image}).encode(), {}, 400),
        "bad base64": (json.dumps({"model": model, "messages": bad_base64}).encode(), {}, 400),
        "unknown model": (json.dumps({"model": "gpt-4o", "messages": hi}).encode(), {}, 404),
        "body over the limit": (body(user="x" * MAX_BODY_BYTES), {}, 413),
        "cross-origin text/plain": (
            body(),
            {"Content-Type": "text/plain", "Origin": "http://evil.example"},
            403,
        ),
        "foreign Host": (body(), {"Host": "rebound.example"}, 400),
    }


# ---- clients ---------------------------------------------------------------------------------


class Soak:
    """The clients' requests against one running server, checked against the references."""

    def __init__(self, url: str, model: str, seed: int) -> None:
        import httpx

        self.url = url
        self.endpoint = url + "/v1/chat/completions"
        self.port = int(url.rsplit(":", 1)[1])
        self.client = httpx.Client(timeout=120)
        self.questions = good_questions(model)
        self.malformed = bad_requests(model)
        self.references: list[str] = []
        self.random = random.Random(seed)
        self.random_lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def pick(self, choices: list[str], weights: list[int] | None = None) -> str:
        with self.random_lock:
            return self.random.choices(choices, weights)[0]

    def pick_question(self) -> int:
        with self.random_lock:
            return self.random.randrange(len(self.questions))

    def ask_alone(self) -> None:
        """The reference answers, one question at a time."""
        for question in self.questions:
            response = self.client.post(self.endpoint, json=question)
            response.raise_for_status()
            self.references.append(response.json()["choices"][0]["message"]["content"])

    def one(self) -> Outcome:
        kind = self.pick(list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))
        start = time.perf_counter()
        outcome = getattr(self, kind)()
        return dataclasses.replace(outcome, seconds=time.perf_counter() - start)

    def good(self) -> Outcome:
        i = self.pick_question()
        question, expected = self.questions[i], self.references[i]
        if self.pick(["plain", "streamed"]) == "plain":
            response = self.client.post(self.endpoint, json=question)
            if response.status_code != 200:
                return Outcome("good", "plain", response.status_code, False, response.text[:200])
            answer = response.json()["choices"][0]["message"]["content"]
            return Outcome("good", "plain", 200, answer == expected, f"{answer!r} != {expected!r}")
        status, answer = self._streamed(question)
        ok = status == 200 and answer == expected
        return Outcome("good", "streamed", status, ok, f"{answer!r} != {expected!r}")

    def _streamed(self, question: dict) -> tuple[int, str]:
        pieces = []
        with self.client.stream("POST", self.endpoint, json={**question, "stream": True}) as response:
            if response.status_code != 200:
                return response.status_code, response.read().decode(errors="replace")[:200]
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return 500, str(chunk["error"])
                pieces += [c["delta"].get("content") or "" for c in chunk["choices"]]
        return 200, "".join(pieces)

    def bad(self) -> Outcome:
        name = self.pick(sorted(self.malformed))
        body, headers, expected = self.malformed[name]
        response = self.client.post(
            self.endpoint, content=body, headers={"Content-Type": "application/json", **headers}
        )
        ok = response.status_code == expected and bool(response.json()["error"]["message"])
        return Outcome("bad", name, response.status_code, ok, response.text[:200])

    def dropped(self) -> Outcome:
        import httpx

        question = {**self.questions[0], "max_tokens": 200}
        if self.pick(["stream", "plain"]) == "stream":
            with self.client.stream("POST", self.endpoint, json={**question, "stream": True}) as response:
                status = response.status_code
                next(response.iter_lines(), None)  # the first piece, then hang up
            return Outcome("dropped", "stream", status, status == 200)
        try:
            response = self.client.post(self.endpoint, json=question, timeout=0.3)
        except httpx.TimeoutException:
            return Outcome("dropped", "plain", 0, True)
        return Outcome("dropped", "plain", response.status_code, response.status_code == 200)

    def slow(self) -> Outcome:
        variant = self.pick(["headers never end", "body stops halfway", "body in pieces"])
        if variant == "headers never end":
            status = self._raw([b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"], pause_s=0)
            return Outcome("slow", variant, status, status == 408)
        i = self.pick_question()
        body = json.dumps(self.questions[i]).encode()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        half = len(body) // 2
        if variant == "body stops halfway":
            status = self._raw([head + body[:half]], pause_s=0)
            return Outcome("slow", variant, status, status == 408)
        status, answer = self._raw_answer([head, body[:half], body[half:]], pause_s=DEADLINE_S / 4)
        return Outcome("slow", variant, status, status == 200 and answer == self.references[i], answer)

    def _raw(self, pieces: list[bytes], pause_s: float) -> int:
        return self._raw_answer(pieces, pause_s)[0]

    def _raw_answer(self, pieces: list[bytes], pause_s: float) -> tuple[int, str]:
        """Send `pieces` `pause_s` apart on a raw connection; the response's status and answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            for k, piece in enumerate(pieces):
                if k:
                    time.sleep(pause_s)
                sock.sendall(piece)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, payload = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        try:
            answer = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            answer = payload.decode(errors="replace")[:200]
        return status, answer


# ---- the run ---------------------------------------------------------------------------------
