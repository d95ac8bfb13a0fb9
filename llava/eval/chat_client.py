"""A minimal OpenAI-compatible `/chat/completions` client on urllib (no extra dependency), with
retries on the HTTP statuses and connection errors that may pass; the LLaVA-Bench judge's."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

logger = logging.getLogger(__name__)

_RETRIABLE_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504})


class ChatClient:
    """Minimal OpenAI-compatible `/chat/completions` client on urllib (no extra dependency)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_wait: float = 5.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_wait = retry_wait

    def _request(self, system: str, user: str) -> urllib.request.Request:
        payload = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )

    def complete(self, system: str, user: str) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(self._request(system, user), timeout=self.timeout) as resp:
                    body = json.loads(resp.read().decode("utf-8"))
                return body["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                if err.code not in _RETRIABLE_HTTP or attempt == self.max_retries:
                    detail = err.read().decode("utf-8", "replace")[:500]
                    raise RuntimeError(f"{self.url}: HTTP {err.code}: {detail}") from err
                logger.warning("%s: HTTP %d, retry %d/%d", self.url, err.code, attempt + 1, self.max_retries)
            except urllib.error.URLError as err:
                if attempt == self.max_retries:
                    raise RuntimeError(f"{self.url}: {err.reason}") from err
                logger.warning("%s: %s, retry %d/%d", self.url, err.reason, attempt + 1, self.max_retries)
            time.sleep(self.retry_wait * (attempt + 1))
        raise AssertionError("unreachable: the last attempt returns or raises")
