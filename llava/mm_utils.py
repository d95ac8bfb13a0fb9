"""Prompt and image helpers shared by training, evaluation and serving.

Behaviour follows LLaVA-1.5's `mm_utils` (image placeholder id -200, `pad` aspect handling):
https://github.com/haotian-liu/LLaVA/blob/main/llava/mm_utils.py
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence

import torch
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX

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
    ones the model sees at inference.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for i, (text, supervised) in enumerate(conv.segments()):
        ids = tokenizer_image_token(text, tokenizer, add_bos=add_bos if i == 0 else False)
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB; a missing or unreadable file raises an error that names it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as err:
        raise OSError(f"cannot read image {path}: {err}") from err


def load_image_from_base64(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


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


def process_images(
    images: Sequence[Image.Image], image_processor, image_aspect_ratio: str = "pad"
) -> torch.Tensor:
    """Images -> pixel tensor `[N, 3, H, W]`.

    `pad`: pad to a square filled with the processor's mean colour, then the processor;
    `resize`: stretch to the processor's square input size; `square`: the processor alone
    (shortest-edge resize + centre crop).
    """
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


def get_model_name_from_path(model_path: str) -> str:
    """`.../run/checkpoint-500` -> `run_checkpoint-500`; otherwise the folder's name."""
    parts = os.path.normpath(model_path).split(os.sep)
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]
