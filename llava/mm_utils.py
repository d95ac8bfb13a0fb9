"""Prompt and image helpers shared by training, evaluation and serving.

Behaviour and calls follow LLaVA-1.5's `mm_utils` (image placeholder id -200, `pad` aspect
handling, `process_images(images, image_processor, model.config)`, `KeywordsStoppingCriteria`):
https://github.com/haotian-liu/LLaVA/blob/main/llava/mm_utils.py
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.cli_errors import UserError
from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle

logger = logging.getLogger(__name__)

IMAGE_ASPECT_RATIOS = ("pad", "resize", "square")


def tokenizer_image_token(
    prompt: str,
    tokenizer,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
    add_bos: bool | None = None,
):
    """Tokenise `prompt`, replacing each `<image>` by one `image_token_index` placeholder.

    Text chunks are tokenised independently (as LLaVA does); a BOS token is prepended once when
    the tokenizer would add one (or when `add_bos` says so).
    """
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    ids: list[int] = []
    if add_bos is None:
        probe = tokenizer("a").input_ids
        add_bos = tokenizer.bos_token_id is not None and len(probe) > 0 and probe[0] == tokenizer.bos_token_id
    if add_bos:
        ids.append(tokenizer.bos_token_id)
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(image_token_index)
        if chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors {return_tensors!r}; use None or 'pt'")


def tokenize_conversation(conv, tokenizer, add_bos: bool | None = None) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation, built segment by segment.

    Training and inference both tokenise prompts through this function, so the supervised
    spans (the assistant replies with their end tokens, `IGNORE_INDEX` elsewhere) are exactly the
    ones the model sees at inference. Special tokens written in a template's text (`<|eot_id|>`,
    `<|im_end|>`) are tokenised as the tokenizer's special tokens.
    """
    if add_bos is None and conv.sep_style is SeparatorStyle.CHAT_TEMPLATE:
        add_bos = False  # the chat template writes the BOS token itself where the model has one
    input_ids: list[int] = []
    labels: list[int] = []
    for i, (text, supervised) in enumerate(conv.segments(tokenizer)):
        ids = tokenizer_image_token(text, tokenizer, add_bos=add_bos if i == 0 else False)
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


class MissingImageError(UserError, FileNotFoundError):
    """An image file that does not exist."""


MAX_IMAGE_PIXELS = 4096 * 4096  # the pixel budget per image (16.8 Mpx, 50 MB as RGB)


class ImageTooLargeError(OSError):
    """An image whose header announces more pixels than the budget (`max_pixels`, by default
    `MAX_IMAGE_PIXELS`), refused before a pixel of it is decoded."""


# Pillow's modes for 16-bit single-channel data (PNG and TIFF greyscale), and its 32-bit integer
# mode, which older Pillow versions (and some TIFFs) use for the same 16-bit data.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB.

    16-bit greyscale (`I;16*`) is scaled by 255/65535 = 1/257 and rounded, so mid-grey stays
    mid-grey (Pillow's own conversion clips it to white). Pillow's 32-bit integer mode `I` holds
    8-bit data in some files and 16-bit data in others: values within 0..255 are kept as they
    are (as Pillow converts them), values up to 65535 are scaled as 16-bit. Pillow already opens
    16-bit RGB(A) PNGs as 8-bit `RGB`/`RGBA`. Floating-point (`F`) images and `I` images outside
    0..65535 have no defined 8-bit range and raise `ValueError`.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image).astype(np.int64)  # [H, W]
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low < 0 or high > _SIXTEEN_BIT_MAX:
            raise ValueError(
                f"mode {image.mode} image with values {low}..{high}: outside the 16-bit range 0..65535"
            )
        scale = 1.0 if image.mode == "I" and high <= 255 else 255 / _SIXTEEN_BIT_MAX
        grey = np.rint(pixels * scale).astype(np.uint8)  # [H, W]
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        raise ValueError("floating-point (mode F) image: no defined 8-bit range")
    return image.convert("RGB")


def _open_rgb(source: str | io.BytesIO, name: str, max_pixels: int | None) -> Image.Image:
    """Decode `source` in full as 8-bit RGB, once its header shows at most `max_pixels` pixels
    (None: no budget); errors name `name` (a path, or what holds the data)."""
    try:
        with Image.open(source) as image:  # reads the header only
            pixels = image.width * image.height
            if max_pixels is not None and pixels > max_pixels:
                raise ImageTooLargeError(
                    f"image {name}: {image.width}x{image.height} = {pixels:,} pixels, over the budget of "
                    f"{max_pixels:,} per image (pass a larger max_pixels if the image is genuine)"
                )
            image.load()  # decodes every byte: a truncated file fails here
            return to_rgb(image)
    except Image.DecompressionBombError as err:  # Pillow's own refusal, at twice its limit
        raise ImageTooLargeError(f"image {name} refused as a possible decompression bomb: {err}") from err
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise OSError(f"cannot read image {name}: {err}") from err


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file as 8-bit RGB (see `to_rgb`), decoded in full once its header shows at
    most `max_pixels` pixels.

    Raises:
        MissingImageError: the file does not exist (a `FileNotFoundError`).
        ImageTooLargeError: its header announces over `max_pixels` pixels (an `OSError`), or
            Pillow refuses it as a decompression bomb; nothing of it is decoded.
        OSError: it cannot be decoded (truncated, not an image, no 8-bit form); names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingImageError(f"image file not found: {path}")
    return _open_rgb(path, path, max_pixels)


def load_image_from_bytes(
    data: bytes, name: str = "<image bytes>", max_pixels: int | None = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode an encoded image (PNG, JPEG, ...) held in memory as `load_image` does; errors name `name`."""
    return _open_rgb(io.BytesIO(data), name, max_pixels)


def load_image_from_base64(
    data: str, name: str = "<base64 image>", max_pixels: int | None = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode a base64-encoded image as `load_image` does; errors name `name`."""
    return load_image_from_bytes(base64.b64decode(data), name, max_pixels)


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """Pad `image` to a square, centred, filled with `background`."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _processor_square_size(image_processor) -> tuple[int, int]:
    """`(height, width)` the processor feeds the tower (its crop size, else its size)."""
    size = getattr(image_processor, "crop_size", None) or image_processor.size
    if isinstance(size, int):
        return size, size

    def field(name: str):
        return size.get(name) if isinstance(size, dict) else getattr(size, name, None)

    if field("height"):
        return field("height"), field("width")
    return field("shortest_edge"), field("shortest_edge")


def process_images(images: Sequence[Image.Image], image_processor, model_cfg: Any = "pad") -> torch.Tensor:
    """Images -> pixel tensor `[N, 3, H, W]`.

    `model_cfg` is the model's config, as LLaVA passes it (its `image_aspect_ratio` decides; None
    is `square`, the processor alone, as in LLaVA), or the aspect ratio itself:
    `pad`: pad to a square filled with the processor's mean colour, then the processor;
    `resize`: stretch to the processor's square input size; `square`: the processor alone
    (shortest-edge resize + centre crop).
    """
    image_aspect_ratio = _aspect_ratio(model_cfg)
    if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
        raise ValueError(
            f"unknown image_aspect_ratio {image_aspect_ratio!r}; expected one of {IMAGE_ASPECT_RATIOS}"
        )
    if image_aspect_ratio == "pad":
        fill = tuple(int(x * 255) for x in image_processor.image_mean)
        images = [expand2square(image, fill) for image in images]
    elif image_aspect_ratio == "resize":
        height, width = _processor_square_size(image_processor)
        images = [image.resize((width, height), Image.BICUBIC) for image in images]
    return image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def _aspect_ratio(model_cfg: Any) -> str:
    """The aspect ratio `process_images` is given, directly or as a model config's field."""
    if isinstance(model_cfg, str):
        return model_cfg
    if not hasattr(model_cfg, "image_aspect_ratio"):
        raise ValueError(
            f"{type(model_cfg).__name__} has no image_aspect_ratio: pass the model's config (model.config) "
            f"or an aspect ratio, one of {IMAGE_ASPECT_RATIOS}"
        )
    return model_cfg.image_aspect_ratio or "square"


def get_model_name_from_path(model_path: str) -> str:
    """`.../run/checkpoint-500` -> `run_checkpoint-500`; otherwise the folder's name."""
    parts = os.path.normpath(model_path).split(os.sep)
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """LLaVA's stop-on-keyword criterion, for `generate(..., stopping_criteria=[criterion])`.

    A row is done once its generated tokens end with a keyword's token ids (the tokenizer's BOS
    dropped), or once the text of its last few generated tokens (as many as the longest keyword
    has) contains a keyword. `input_ids` is the prompt `[B, L]` given to `generate`: the
    multimodal models' `generate` returns only the new tokens, a plain LM's the prompt followed by
    them, and the prompt is never searched. Returns one bool per row (`[B * num_beams]`), so each
    row stops on its own, where LLaVA's criterion answered one bool for the whole batch.
    """

    def __init__(self, keywords: Sequence[str], tokenizer, input_ids: torch.Tensor) -> None:
        if isinstance(keywords, str) or not keywords or not all(isinstance(k, str) and k for k in keywords):
            raise ValueError(f"keywords must be a non-empty list of non-empty strings, got {keywords!r}")
        self.keywords = list(keywords)
        self.tokenizer = tokenizer
        self.keyword_ids = [self._token_ids(keyword) for keyword in self.keywords]
        self.window = max(len(ids) for ids in self.keyword_ids)
        self.prompt_ids = input_ids  # [B, L]

    def _token_ids(self, keyword: str) -> list[int]:
        ids = self.tokenizer(keyword).input_ids
        if len(ids) > 1 and ids[0] == self.tokenizer.bos_token_id:
            ids = ids[1:]
        if not ids:
            raise ValueError(f"keyword {keyword!r} has no tokens to stop on")
        return ids

    def _generated(self, output_ids: torch.Tensor) -> torch.Tensor:
        """`[rows, n]` the generated part of `output_ids` (without the prompt, where it starts with it)."""
        rows, length = output_ids.shape
        batch, prompt_length = self.prompt_ids.shape
        if length <= prompt_length or rows % batch:
            return output_ids
        prompt = self.prompt_ids.to(output_ids.device).repeat_interleave(rows // batch, dim=0)  # [rows, L]
        starts_with_prompt = torch.equal(output_ids[:, :prompt_length], prompt)
        return output_ids[:, prompt_length:] if starts_with_prompt else output_ids

    def _row_done(self, row: list[int]) -> bool:
        if any(row[len(row) - len(ids) :] == ids for ids in self.keyword_ids if len(ids) <= len(row)):
            return True
        text = self.tokenizer.decode(row[-self.window :], skip_special_tokens=True)
        return any(keyword in text for keyword in self.keywords)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = [self._row_done(row) for row in self._generated(input_ids).tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
