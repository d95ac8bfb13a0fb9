"""Remote images (`--allow-remote-images`): fetched on a pool of their own, with size, time and
redirect limits, so that image URLs that never answer cannot hold up other requests. Every URL
here points at servers of the test on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llava.inference.images import ImageInputError, ImagePolicy, fetch_remote
from tests.serve.serve_helpers import own_server, png_data_url

FETCH_TIMEOUT_S = 3.0
FETCH_WORKERS, FETCH_QUEUE = 2, 4
DRIP_LIMIT_S = 30.0  # the dripping handler's own bound


class _Images(http.server.BaseHTTPRequestHandler):
    """/img.png: a PNG; /to-img: a redirect to it; /to-ftp: a redirect to ftp://; /drip: a PNG's
    first bytes, one every 0.2 s."""

    png = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/img.png":
            self._send(200, self.png, "image/png")
        elif self.path in ("/to-img", "/to-ftp"):
            target = (
                "/img.png" if self.path == "/to-img" else f"ftp://127.0.0.1:{self.server.server_port}/img.png"
            )
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/drip":
            self._drip()
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        deadline = time.monotonic() + DRIP_LIMIT_S
        for byte in self.png:
            if time.monotonic() > deadline:
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the fetcher gave up
                return
            time.sleep(0.2)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def image_host(image_folder) -> Iterator[str]:
    """Base URL of a local HTTP server of test images."""
    handler = type("Images", (_Images,), {"png": (image_folder / "img1.png").read_bytes()})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_port}"
        finally:
            httpd.shutdown()
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    """A URL whose server accepts connections (into its backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/never.png"


@pytest.fixture(scope="module")
def fetching_server(tiny_model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("fetching") / "server.log"
    flags = ["--allow-remote-images", "--remote-timeout-s", str(FETCH_TIMEOUT_S)]
    flags += ["--remote-fetch-workers", str(FETCH_WORKERS), "--remote-fetch-queue", str(FETCH_QUEUE)]
    with own_server(tiny_model_path, log, *flags) as running:
        yield running


def _body(url: str | None, text: str = "What is in the image?") -> dict:
    content: list[dict] = [{"type": "text", "text": text}]
    if url is not None:
        content.append({"type": "image_url", "image_url": {"url": url}})
    return {"model": "tiny-fusion", "messages": [{"role": "user", "content": content}], "max_tokens": 6}


def _post(server, body: dict, timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=timeout)


def test_remote_images_and_http_redirects_read_the_same_image(fetching_server, image_host, image_folder):
    by_data = _post(fetching_server, _body(png_data_url((image_folder / "img1.png").read_bytes())))
    expected = by_data.json()["choices"][0]["message"]["content"]
    for path in ("/img.png", "/to-img"):
        response = _post(fetching_server, _body(image_host + path))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == expected


def test_a_redirect_to_ftp_is_not_followed(fetching_server, image_host):
    with pytest.raises(ImageInputError, match="redirect to a non-http.s. URL refused: ftp://"):
        fetch_remote(image_host + "/to-ftp", ImagePolicy(allow_remote=True), "image 0")
    response = _post(fetching_server, _body(image_host + "/to-ftp"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1]" and "non-http(s) URL refused" in error["message"]


def test_an_image_that_drips_in_is_cut_at_the_time_limit(fetching_server, image_host):
    start = time.monotonic()
    response = _post(fetching_server, _body(image_host + "/drip"))
    assert response.status_code == 400 and time.monotonic() - start < FETCH_TIMEOUT_S + 3
    assert "within 3 s" in response.json()["error"]["message"]


def test_stalled_fetches_do_not_delay_requests_that_fetch_nothing(fetching_server, black_hole):
    text_only = _body(None, "Say hello.")
    alone_start = time.monotonic()
    assert _post(fetching_server, text_only).status_code == 200
    alone = time.monotonic() - alone_start
    with ThreadPoolExecutor(60) as pool:
        stalled = [pool.submit(_post, fetching_server, _body(black_hole), 30) for _ in range(60)]
        time.sleep(1.0)  # every stalled request has arrived and holds what it can
        start = time.monotonic()
        response = _post(fetching_server, text_only)
        during = time.monotonic() - start
        statuses = [future.result().status_code for future in stalled]
    assert response.status_code == 200
    assert during < max(2.0, 5 * alone), f"a text-only request took {during:.2f} s (alone: {alone:.2f} s)"
    # The fetch pool holds 2 fetching and 4 waiting; the rest are turned away at once, and none
    # of them is a server error.
    assert set(statuses) <= {400, 429} and statuses.count(429) >= 60 - FETCH_WORKERS - FETCH_QUEUE
    assert _post(fetching_server, text_only).status_code == 200
