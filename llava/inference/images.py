"""Image inputs of chat requests: data URLs, local files under an allowed folder, and remote URLs
only where the caller allows fetching. Every image is decoded in full (`llava.mm_utils`).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

from llava.mm_utils import load_image, load_image_from_bytes, to_rgb

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)$", re.S
)


class ImageInputError(ValueError):
    """An image input that is refused or cannot be decoded; the message names it."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from.

    `image_folder`: local paths (plain or `file://`) are allowed only inside it (after resolving
    links); None refuses every local path. `allow_remote`: fetch `http(s)://` URLs (at most
    `max_bytes` each, `timeout_s` seconds); refused otherwise.
    """

    image_folder: Path | None = None
    allow_remote: bool = False
    max_bytes: int = 20 * 2**20
    timeout_s: float = 10.0


def _describe(source: str) -> str:
    return source if len(source) <= 60 else source[:57] + "..."


def _from_data_url(url: str, name: str) -> Image.Image:
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise ImageInputError(f"{name}: a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode(match.group("data"), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageInputError(f"{name}: bad base64 ({err})") from err
    return _from_bytes(data, name)


def _from_bytes(data: bytes, name: str) -> Image.Image:
    try:
        return load_image_from_bytes(data, name)
    except OSError as err:
        raise ImageInputError(f"{name}: not a readable image ({err})") from err


def _from_local_path(path: str, policy: ImagePolicy, name: str) -> Image.Image:
    if policy.image_folder is None:
        raise ImageInputError(f"{name}: local image paths are refused (the server allows no image folder)")
    folder = policy.image_folder.resolve()
    resolved = Path(path).expanduser()
    resolved = (resolved if resolved.is_absolute() else folder / resolved).resolve()
    if not resolved.is_relative_to(folder):
        raise ImageInputError(f"{name}: outside the allowed image folder {folder}")
    try:
        return load_image(resolved)
    except FileNotFoundError as err:
        raise ImageInputError(f"{name}: no such image file") from err
    except OSError as err:
        raise ImageInputError(f"{name}: not a readable image ({err})") from err


def _from_remote(url: str, policy: ImagePolicy, name: str) -> Image.Image:
    if not policy.allow_remote:
        raise ImageInputError(f"{name}: remote image URLs are refused (the server does not fetch images)")
    try:
        with urllib.request.urlopen(url, timeout=policy.timeout_s) as response:  # noqa: S310 (http(s) only)
            data = response.read(policy.max_bytes + 1)
    except OSError as err:  # unreachable, an HTTP error status, a timeout
        raise ImageInputError(f"{name}: cannot fetch it ({err})") from err
    if len(data) > policy.max_bytes:
        raise ImageInputError(f"{name}: over the {policy.max_bytes}-byte image limit")
    return _from_bytes(data, name)


def load_image_input(source: Any, policy: ImagePolicy, name: str = "image") -> Image.Image:
    """`source` (a PIL image, a data URL, a local path or `file://` URL, or an `http(s)://` URL)
    as an 8-bit RGB image, under `policy`.

    Raises:
        ImageInputError: the source is refused or cannot be decoded; the message starts with `name`.
    """
    if isinstance(source, Image.Image):
        try:
            return to_rgb(source)
        except ValueError as err:
            raise ImageInputError(f"{name}: {err}") from err
    if not isinstance(source, str):
        raise ImageInputError(f"{name}: expected an image URL, got {type(source).__name__}")
    label = f"{name} ({_describe(source)})"
    if source.startswith("data:"):
        return _from_data_url(source, name)
    scheme = urlparse(source).scheme.lower()
    if scheme in ("http", "https"):
        return _from_remote(source, policy, label)
    if scheme == "file":
        return _from_local_path(unquote(urlparse(source).path), policy, label)
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        raise ImageInputError(f"{label}: unsupported URL scheme {scheme!r}")
    return _from_local_path(os.fspath(source), policy, label)
