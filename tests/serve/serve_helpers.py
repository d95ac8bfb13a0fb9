"""The server under test and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_BODY_BYTES = 200_000
MAX_IMAGES = 4
DEFAULT_MAX_TOKENS = 12  # the answer budget of a request without max_tokens


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT
    model_id: str
    log: Path

    @property
    def api(self) -> str:
        return self.url + "/v1"
