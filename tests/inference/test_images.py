"""Image inputs: data URLs, local files under the allowed folder only, remote URLs only when allowed."""

from __future__ import annotations

import base64
import os

import pytest
from PIL import Image

from llava.inference.images import ImageInputError, ImagePolicy, load_image_input


def _data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def test_data_url_and_local_paths_give_the_same_pixels(image_folder):
    policy = ImagePolicy(image_folder=image_folder)
    by_data = load_image_input(_data_url(image_folder / "img0.png"), policy)
    for source in (str(image_folder / "img0.png"), "img0.png", (image_folder / "img0.png").as_uri()):
        assert load_image_input(source, policy).tobytes() == by_data.tobytes()
    assert by_data.mode == "RGB" and by_data.size == (40, 32)


@pytest.mark.parametrize(
    "source, message",
    [
        ("data:image/png;base64,@@@", "bad base64"),
        ("data:image/png," + "abc", "must be base64-encoded"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a readable image"),
        ("ftp://127.0.0.1/x.png", "unsupported URL scheme"),
        ("http://127.0.0.1:9/x.png", "remote image URLs are refused"),
        ("missing.png", "no such image file"),
    ],
)
def test_refused_or_unreadable_sources_name_the_image(source, message, image_folder):
    with pytest.raises(ImageInputError, match=message) as caught:
        load_image_input(source, ImagePolicy(image_folder=image_folder), name="image 3")
    assert str(caught.value).startswith("image 3")


def test_paths_outside_the_folder_are_refused_links_included(image_folder, tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(outside)
    inner = tmp_path / "allowed"
    inner.mkdir()
    os.symlink(outside, inner / "link.png")
    policy = ImagePolicy(image_folder=inner)
    for source in (str(outside), "../secret.png", "link.png"):
        with pytest.raises(ImageInputError, match="outside the allowed image folder"):
            load_image_input(source, policy)
    with pytest.raises(ImageInputError, match="local image paths are refused"):
        load_image_input(str(outside), ImagePolicy())


def test_remote_images_are_fetched_only_when_allowed(image_folder):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image_folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/img1.png"
        try:
            fetched = load_image_input(url, ImagePolicy(allow_remote=True))
            assert (
                fetched.tobytes()
                == load_image_input(str(image_folder / "img1.png"), ImagePolicy(image_folder)).tobytes()
            )
            with pytest.raises(ImageInputError, match="over the 100-byte image limit"):
                load_image_input(url, ImagePolicy(allow_remote=True, max_bytes=100))
            with pytest.raises(ImageInputError, match="remote image URLs are refused"):
                load_image_input(url, ImagePolicy())
            missing = url.replace("img1.png", "gone.png")  # the server answers 404
            with pytest.raises(ImageInputError, match=r"gone\.png\): cannot fetch it \(HTTP Error 404"):
                load_image_input(missing, ImagePolicy(allow_remote=True))
        finally:
            httpd.shutdown()
