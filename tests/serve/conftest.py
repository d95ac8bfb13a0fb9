"""Serving-test fixtures: the OpenAI-compatible server on the tiny checkpoint, started as its users
start it (`python -m llava.serve.api`) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llava.serve.launch import server_process
from tests.serve.serve_helpers import DEFAULT_MAX_TOKENS, MAX_BODY_BYTES, MAX_IMAGES, Server


@pytest.fixture(scope="session")
def api_server(tiny_model_path, image_folder, tmp_path_factory) -> Iterator[Server]:
    """The server on the tiny checkpoint: images allowed under `image_folder`, bodies up to
    `MAX_BODY_BYTES`, at most `MAX_IMAGES` images a request, `DEFAULT_MAX_TOKENS` for a request
    without max_tokens, batches of up to 16."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    flags = ["--image-folder", str(image_folder), "--max-body-bytes", str(MAX_BODY_BYTES)]
    flags += ["--max-images", str(MAX_IMAGES), "--default-max-tokens", str(DEFAULT_MAX_TOKENS)]
    flags += ["--batch-wait-ms", "50"]
    with server_process(Path(tiny_model_path), log, 1, *flags) as running:
        model = httpx.get(running.url + "/health").json()["model"]
        yield Server(running.url, model, log, running.process.pid)
