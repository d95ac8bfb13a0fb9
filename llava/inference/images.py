"""Image inputs of chat requests: data URLs, local files under an allowed folder, and remote URLs
only where the caller allows fetching.

Every image is first read without decoding (`read_image_input`): its size comes from the file's
header and is checked against the pixel budget (`ImagePolicy.max_pixels`), so an image that would
take gigabytes once decoded is refused before a pixel of it is decoded. It is then decoded in full
with the checks of training's loader (`llava.mm_utils`).

Remote images are fetched with limits on size, time and redirects (`fetch_remote`: only to
`http(s)`), and a server fetches them on a pool of their own (`RemoteFetcher`), so that requests
whose images never arrive cannot hold the threads other requests need.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

from llava.mm_utils import load_image, load_image_from_bytes, to_rgb

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # per image: 16.8 Mpx, 50 MB once decoded as RGB
_READ_CHUNK = 64 * 2**10
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S
)


class ImageInputError(ValueError):
    """An image input that is refused or cannot be decoded; the message names it."""


class TooManyPixelsError(ImageInputError):
    """An image whose header announces more pixels than the budget allows."""


class FetchBusyError(ImageInputError):
    """Every remote-fetch slot is taken: the request may be tried again later."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from, and how large they may be.

    `image_folder`: local paths (plain or `file://`) are allowed only inside it (after resolving
    links); None refuses every local path. `allow_remote`: fetch `http(s)://` URLs (at most
    `max_bytes` each, within `timeout_s` seconds in all, following at most `max_redirects`
    redirects, each to `http(s)` only); refused otherwise. `max_pixels`: width x height allowed
    per image, read from the header before decoding.
    """

    image_folder: Path | None = None
    allow_remote: bool = False
    max_bytes: int = 20 * 2**20
    timeout_s: float = 10.0
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_redirects: int = 3


@dataclass(frozen=True)
class EncodedImage:
    """An image input read but not decoded: its encoded bytes (or its file) and its header's size."""

    data: bytes | Path
    name: str
    size: tuple[int, int]  # (width, height), from the header

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def decode(self) -> Image.Image:
        """The image as 8-bit RGB, decoded in full (`llava.mm_utils`)."""
        try:
            if isinstance(self.data, Path):
                return load_image(self.data)
            return load_image_from_bytes(self.data, self.name)
        except FileNotFoundError as err:
            raise ImageInputError(f"{self.name}: no such image file") from err
        except OSError as err:
            raise ImageInputError(f"{self.name}: not a readable image ({err})") from err


def _describe(source: str) -> str:
    return source if len(source) <= 60 else source[:57] + "..."


def _header_size(data: bytes | Path, name: str) -> tuple[int, int]:
    """(width, height) from the image's header; nothing is decoded."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.size
    except Image.DecompressionBombError as err:  # Pillow's own refusal, at twice its limit
        raise TooManyPixelsError(f"{name}: too many pixels ({err})") from err
    except FileNotFoundError as err:
        raise ImageInputError(f"{name}: no such image file") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(f"{name}: not a readable image ({err})") from err


def check_pixels(image: EncodedImage, max_pixels: int) -> None:
    """Raises `TooManyPixelsError` naming `image` when its header announces over `max_pixels`."""
    if image.pixels > max_pixels:
        width, height = image.size
        raise TooManyPixelsError(
            f"{image.name}: {width}x{height} = {image.pixels:,} pixels, over the limit of {max_pixels:,} "
            "pixels per image"
        )


def _encoded(data: bytes | Path, policy: ImagePolicy, name: str) -> EncodedImage:
    image = EncodedImage(data, name, _header_size(data, name))
    check_pixels(image, policy.max_pixels)
    return image


def _data_url_bytes(url: str, name: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise ImageInputError(f"{name}: a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageInputError(f"{name}: bad base64 ({err})") from err


def _local_path(path: str, policy: ImagePolicy, name: str) -> Path:
    if policy.image_folder is None:
        raise ImageInputError(f"{name}: local image paths are refused (the server allows no image folder)")
    folder = policy.image_folder.resolve()
    resolved = Path(path).expanduser()
    resolved = (resolved if resolved.is_absolute() else folder / resolved).resolve()
    if not resolved.is_relative_to(folder):
        raise ImageInputError(f"{name}: outside the allowed image folder {folder}")
    if not resolved.is_file():
        raise ImageInputError(f"{name}: no such image file")
    return resolved


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an `http(s)` URL (urllib's own also follows `ftp://`)."""

    def __init__(self, max_redirects: int) -> None:
        super().__init__()
        self.max_redirections = max_redirects

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        if urlparse(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to a non-http(s) URL refused: {_describe(newurl)}", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_remote(url: str, policy: ImagePolicy, name: str = "image") -> bytes:
    """The bytes at an `http(s)` URL, under `policy`: at most `max_bytes`, all within `timeout_s`
    (each socket operation too), redirects only to `http(s)` and at most `max_redirects`.

    Raises:
        ImageInputError: refused, unreachable, an HTTP error, too large or too slow; names `name`.
    """
    if not policy.allow_remote:
        raise ImageInputError(f"{name}: remote image URLs are refused (the server does not fetch images)")
    deadline = time.monotonic() + policy.timeout_s
    opener = urllib.request.build_opener(_HttpOnlyRedirects(policy.max_redirects))
    chunks, size = [], 0
    try:
        with opener.open(url, timeout=policy.timeout_s) as response:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise ImageInputError(f"{name}: over the {policy.max_bytes}-byte image limit")
            while chunk := response.read1(_READ_CHUNK):  # one socket read at a time
                size += len(chunk)
                if size > policy.max_bytes:
                    raise ImageInputError(f"{name}: over the {policy.max_bytes}-byte image limit")
                if time.monotonic() > deadline:
                    raise ImageInputError(f"{name}: not received within {policy.timeout_s:g} s")
                chunks.append(chunk)
    except OSError as err:  # unreachable, an HTTP error status, a refused redirect, a timeout
        raise ImageInputError(f"{name}: cannot fetch it ({err})") from err
    return b"".join(chunks)


def is_remote(source: Any) -> bool:
    return isinstance(source, str) and urlparse(source).scheme.lower() in ("http", "https")


def source_label(source: Any, name: str) -> str:
    """How errors name an image: `name`, and the source when it is a short path or URL."""
    if isinstance(source, str) and not source.startswith("data:"):
        return f"{name} ({_describe(source)})"
    return name


def read_image_input(
    source: Any, policy: ImagePolicy, name: str = "image", fetched: bytes | None = None
) -> EncodedImage:
    """`source` (a data URL, a local path or `file://` URL, or an `http(s)://` URL) read but not
    decoded, its pixels checked from the header against `policy.max_pixels`. `fetched`: the bytes
    of a remote `source`, already fetched (else they are fetched here).

    Raises:
        ImageInputError: the source is refused, unreadable or over the pixel budget
            (`TooManyPixelsError`); the message starts with `name`.
    """
    if not isinstance(source, str):
        raise ImageInputError(f"{name}: expected an image URL, got {type(source).__name__}")
    label = source_label(source, name)
    if source.startswith("data:"):
        return _encoded(_data_url_bytes(source, name), policy, name)
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        data = fetched if fetched is not None else fetch_remote(source, policy, label)
        return _encoded(data, policy, label)
    if scheme == "file":
        return _encoded(_local_path(unquote(urlparse(source).path), policy, label), policy, label)
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        raise ImageInputError(f"{label}: unsupported URL scheme {scheme!r}")
    return _encoded(_local_path(os.fspath(source), policy, label), policy, label)


def load_image_input(source: Any, policy: ImagePolicy, name: str = "image") -> Image.Image:
    """`source` (a PIL image, or what `read_image_input` reads) as an 8-bit RGB image, under
    `policy` (the pixel budget checked before decoding).

    Raises:
        ImageInputError: the source is refused, cannot be decoded, or is over the pixel budget;
            the message starts with `name`.
    """
    if isinstance(source, Image.Image):
        try:
            return to_rgb(source)
        except ValueError as err:
            raise ImageInputError(f"{name}: {err}") from err
    return read_image_input(source, policy, name).decode()


class RemoteFetcher:
    """Fetches remote images (`fetch_remote`) on `workers` threads of its own, with at most
    `max_waiting` more fetches queued; beyond that `submit` refuses at once (`FetchBusyError`).
    Requests that fetch nothing never wait for it."""

    def __init__(self, policy: ImagePolicy, workers: int = 4, max_waiting: int = 16) -> None:
        if workers < 1 or max_waiting < 0:
            raise ValueError(f"workers must be >= 1 and max_waiting >= 0, got {workers} and {max_waiting}")
        self.policy = policy
        self.capacity = workers + max_waiting
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="llava-fetch")

    def submit(self, url: str, name: str) -> Future[bytes]:
        """Fetch `url` in the background; the future holds its bytes or an `ImageInputError`.
        A future cancelled while it waits frees its slot without fetching."""
        if not self._slots.acquire(blocking=False):
            raise FetchBusyError(
                f"{name}: the server is already fetching {self.capacity} remote images; try again later"
            )
        try:
            future = self._pool.submit(fetch_remote, url, self.policy, name)
        except RuntimeError:  # the pool is shut down
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        """Drop the queued fetches; running ones end by their own time limit."""
        self._pool.shutdown(wait=False, cancel_futures=True)
