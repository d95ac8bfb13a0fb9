"""Serving-test fixtures: the OpenAI-compatible server on the tiny checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_helpers import MAX_BODY_BYTES, MAX_IMAGES, Server, start_server, stop_server


@pytest.fixture(scope="session")
def api_server(tiny_model_path, image_folder, tmp_path_factory) -> Iterator[Server]:
    """The server on the tiny checkpoint: images allowed under `image_folder`, bodies up to
    `MAX_BODY_BYTES`, at most `MAX_IMAGES` images a request, batches of up to 16."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = start_server(
        tiny_model_path,
        log,
        "--image-folder",
        str(image_folder),
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--max-images",
        str(MAX_IMAGES),
        "--batch-wait-ms",
        "50",
    )
    yield server
    stop_server(server)
