"""Conversations with the model's template, from a query or from OpenAI-style chat messages.

A user message's images go in front of its text, one `<image>` line each (LLaVA's layout), unless
the text places its own `<image>` placeholders, which must then match the images in number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, get_conv_template

DEFAULT_CONV_MODE = "vicuna_v1"


class PromptError(ValueError):
    """A conversation that cannot be built; `param` names the offending field (`messages[2].content`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def open_conversation(conv_mode: str, query: str, history: Sequence[tuple[str, str]] = ()) -> Conversation:
    """The template `conv_mode` with earlier `(user, assistant)` turns, then `query` awaiting a reply."""
    conv = get_conv_template(conv_mode)
    for user, assistant in history:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], assistant)
    conv.append_message(conv.roles[0], query)
    conv.append_message(conv.roles[1], None)
    return conv


def with_image_tokens(query: str, num_images: int) -> str:
    """`query` with one `<image>` line per image in front, unless it places its own `<image>`s
    (then their number must match)."""
    placed = query.count(DEFAULT_IMAGE_TOKEN)
    if placed == 0:
        return (DEFAULT_IMAGE_TOKEN + "\n") * num_images + query
    if placed != num_images:
        raise PromptError(
            f"the query holds {placed} {DEFAULT_IMAGE_TOKEN} placeholder(s) but {num_images} image(s) were given"
        )
    return query


def split_image_files(image_file: str, sep: str = ",") -> list[str]:
    files = [name.strip() for name in image_file.split(sep) if name.strip()]
    if not files:
        raise ValueError(f"no image file in {image_file!r}")
    return files


def _content_parts(content: Any, where: str) -> tuple[str, list[Any]]:
    """A message's text and its images (in order): `content` is a string or a list of parts
    `{"type": "text", "text": ...}`, `{"type": "image_url", "image_url": {"url": ...}}` or
    `{"type": "image", "image": <PIL image or URL>}`."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list) or not content:
        raise PromptError(f"{where}: content must be a string or a non-empty list of parts", where)
    texts: list[str] = []
    images: list[Any] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if not isinstance(url, str) or not url:
                raise PromptError(f"{at}: an image_url part needs image_url.url", at)
            images.append(url)
        elif kind == "image" and part.get("image") is not None:
            images.append(part["image"])
        else:
            raise PromptError(f"{at}: expected a text, image_url or image part, got {part!r:.80}", at)
    return "\n".join(texts), images


def conversation_from_messages(
    messages: Sequence[Mapping[str, Any]], conv_mode: str = DEFAULT_CONV_MODE
) -> tuple[Conversation, list[Any]]:
    """The open conversation of OpenAI-style `messages` and its images in order of appearance.

    An optional first `system` message replaces the template's system prompt; then `user` and
    `assistant` turns alternate, user first and last. Assistant turns are text only.

    Raises:
        PromptError: naming the message (and part) at fault.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise PromptError("messages must be a non-empty list", "messages")
    conv = get_conv_template(conv_mode)
    turns = list(messages)
    images: list[Any] = []
    start = 0
    for i, message in enumerate(turns):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise PromptError(f"messages[{i}] needs a role and a content", f"messages[{i}]")
    if turns[0]["role"] == "system":
        system, system_images = _content_parts(turns[0]["content"], "messages[0].content")
        if system_images:
            raise PromptError("messages[0]: a system message cannot hold images", "messages[0].content")
        conv.system = system
        start = 1
    if start == len(turns):
        raise PromptError("messages hold no user message", "messages")
    for i, message in enumerate(turns[start:], start=start):
        expected = ("user", "assistant")[(i - start) % 2]
        if message["role"] != expected:
            raise PromptError(
                f"messages[{i}] has role {message['role']!r}, expected {expected!r} "
                "(after an optional system message, user and assistant turns alternate, user first)",
                f"messages[{i}].role",
            )
        text, parts_images = _content_parts(message["content"], f"messages[{i}].content")
        if expected == "assistant":
            if parts_images:
                raise PromptError(f"messages[{i}]: an assistant message cannot hold images", f"messages[{i}]")
            conv.append_message(conv.roles[1], text)
            continue
        try:
            conv.append_message(conv.roles[0], with_image_tokens(text, len(parts_images)))
        except PromptError as err:
            raise PromptError(f"messages[{i}]: {err}", f"messages[{i}].content") from err
        images.extend(parts_images)
    if turns[-1]["role"] != "user":
        raise PromptError("the last message must be the user's", f"messages[{len(turns) - 1}].role")
    conv.append_message(conv.roles[1], None)
    return conv, images
