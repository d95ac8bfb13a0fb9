"""The pixel budget: images are measured from their header and refused before decoding."""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from llava.data.toy import grey_png
from llava.inference.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImagePolicy,
    TooManyPixelsError,
    load_image_input,
    read_image_input,
)
from llava.serve.launch import rss_bytes
from tests.serve.serve_helpers import png_data_url


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """12000 x 12000 pixels (144 Mpx, between 1x and 2x Pillow's limit) in 140 KB."""
    return grey_png(12000, 12000)


def _ask(api_server, *urls: str) -> httpx.Response:
    content = [{"type": "text", "text": "What is it?"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    body = {"model": api_server.model_id, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return httpx.post(api_server.api + "/chat/completions", json=body, timeout=120)


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(api_server, bomb):
    rss_before = rss_bytes(api_server.pid)
    start = time.monotonic()
    response = _ask(api_server, png_data_url(bomb))
    seconds = time.monotonic() - start
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and error["param"] == "messages[0].content[1]"
    assert "12000x12000 = 144,000,000 pixels" in error["message"] and "--max-image-pixels" in error["message"]
    # Refused before decoding: no 144 MB greyscale (or 432 MB RGB) copy, no seconds of decoding.
    assert seconds < 5 and rss_bytes(api_server.pid) - rss_before < 64 * 2**20


def test_the_images_of_a_request_share_a_pixel_budget(api_server):
    side = 4096  # each within --max-image-pixels; three are over the request's default budget
    url = png_data_url(grey_png(side, side))
    response = _ask(api_server, url, url, url)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "image_too_large" and error["param"] == "messages[0].content[3]"
    assert "--max-request-pixels" in error["message"]


def test_the_budget_is_read_from_the_header_of_data_urls_and_files(tmp_path):
    Image.new("RGB", (200, 100), "red").save(tmp_path / "wide.png")
    sources = [png_data_url((tmp_path / "wide.png").read_bytes()), "wide.png"]
    for source in sources:
        small = ImagePolicy(image_folder=tmp_path, max_pixels=19_999)
        with pytest.raises(TooManyPixelsError, match=r"^question 7.*200x100 = 20,000 pixels, over the limit"):
            load_image_input(source, small, name="question 7")
        enough = ImagePolicy(image_folder=tmp_path, max_pixels=20_000)
        assert read_image_input(source, enough).size == (200, 100)
        assert load_image_input(source, enough).size == (200, 100)
    assert ImagePolicy().max_pixels == DEFAULT_MAX_IMAGE_PIXELS == 4096 * 4096


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, from the header
def test_a_bomb_is_refused_without_decoding(bomb):
    with pytest.raises(TooManyPixelsError, match="144,000,000 pixels"):
        read_image_input(png_data_url(bomb), ImagePolicy(), name="image 0")
