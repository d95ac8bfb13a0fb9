"""OpenAI's chat-completions wire format: request validation and response objects.

Objects follow the OpenAI API reference (https://platform.openai.com/docs/api-reference/chat) as
the official `openai` client reads them: `chat.completion`, `chat.completion.chunk` (with
`choices[].delta`), `usage`, the `list` of `model` objects, and the error object
`{"error": {"message", "type", "param", "code"}}`.

Beyond OpenAI's parameters, `num_beams` (beam search; not with `stream`) may be passed in the
body (`extra_body` in the client).

Every malformed body is a `RequestError` (a 4xx): bytes that are not JSON, JSON nested deeper than
`MAX_JSON_DEPTH`, numbers Python will not convert (over 4300 digits), strings holding a lone UTF-16
surrogate (`"\\ud800"` in JSON, which no tokenizer or UTF-8 encoder takes).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation
from llava.inference import Completion, DecodingSettings, PromptError, conversation_from_messages

MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_BEAMS = 8
MAX_JSON_DEPTH = 32  # a chat request needs 6 (body, messages, message, content, part, image_url)
_SURROGATE = re.compile("[\ud800-\udfff]")
_KNOWN = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stream",
    "stream_options",
    "n",
    "num_beams",
    "user",
}


class RequestError(Exception):
    """A request refused with HTTP `status` and OpenAI's error object."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.type = status, param, code, type

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def decode_json_body(raw: bytes) -> Any:
    """The JSON value of a request body, checked to be safe for what follows (see the module's doc).

    Raises:
        RequestError: 400 `invalid_json`, saying what is wrong and where.
    """
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"the request body is not JSON ({err})", code="invalid_json") from err
    except RecursionError as err:
        raise RequestError(
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json"
        ) from err
    except ValueError as err:  # an integer of over 4300 digits
        raise RequestError(
            f"the request body holds an unreadable number ({err})", code="invalid_json"
        ) from err
    _check_json(value)
    return value


def _check_json(value: Any) -> None:
    """Depth at most `MAX_JSON_DEPTH`, no lone surrogate in any string or key (iteratively)."""
    pending: list[tuple[Any, str, int]] = [(value, "body", 1)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise RequestError(
                    f"{where} holds a lone UTF-16 surrogate (not a character)",
                    param=where,
                    code="invalid_json",
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise RequestError(
                f"the request body is nested deeper than {MAX_JSON_DEPTH} levels (at {where})",
                code="invalid_json",
            )
        if isinstance(item, list):
            pending.extend((element, f"{where}[{i}]", depth + 1) for i, element in enumerate(item))
            continue
        for key, element in item.items():
            if _SURROGATE.search(key):
                raise RequestError(f"a key of {where} holds a lone UTF-16 surrogate", code="invalid_json")
            path = key if where == "body" else f"{where}.{key}"
            pending.append((element, path, depth + 1))


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    parts = content if isinstance(content, list) else []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _check_placeholders(messages: Any) -> None:
    """Only a user message's text may hold `<image>` (each one placing one of its images)."""
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") == "user":
            continue
        if any(DEFAULT_IMAGE_TOKEN in text for text in _texts(message.get("content"))):
            raise RequestError(
                f"messages[{i}]: a {message.get('role')!r} message cannot hold {DEFAULT_IMAGE_TOKEN} "
                "(only a user message's text places its images)",
                param=f"messages[{i}].content",
            )


def image_locations(messages: Any) -> list[str]:
    """Where each image of `messages` sits (`messages[1].content[0]`), in the order in which
    `conversation_from_messages` returns the images."""
    locations = []
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                locations.append(f"messages[{i}].content[{j}]")
    return locations


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: its open conversation, its image sources in order and where each
    sits in the messages (`image_names`), the answer budget the client asked for (None: the
    server's default), and its decoding."""

    conversation: Conversation
    images: list[Any]
    image_names: list[str]
    max_tokens: int | None
    temperature: float
    top_p: float | None
    num_beams: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool

    def settings(self, max_new_tokens: int) -> DecodingSettings:
        return DecodingSettings(
            temperature=self.temperature,
            top_p=self.top_p,
            num_beams=self.num_beams,
            max_new_tokens=max_new_tokens,
            stop=self.stop,
        )


def _number(
    body: Mapping[str, Any], name: str, low: float, high: float, default: float | None
) -> float | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{name} must be a number in [{low}, {high}], got {value!r}", param=name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{name} must be an integer in [{low}, {high}], got {value!r}", param=name)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not 1 <= len(stops) <= MAX_STOP_STRINGS
        or any(not isinstance(s, str) or not s for s in stops)
    ):
        raise RequestError(
            f"stop must be a non-empty string or a list of 1 to {MAX_STOP_STRINGS} non-empty strings",
            param="stop",
        )
    return tuple(stops)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}", param=name)
    return value


def parse_chat_request(
    body: Any, served_model: str, conv_mode: str, max_images: int, max_tokens_limit: int
) -> ChatRequest:
    """Validate a decoded JSON body against what this server offers.

    Raises:
        RequestError: 400 naming the parameter at fault; 404 for another model.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise RequestError(f"unsupported parameter(s): {', '.join(unknown)}", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required (see /v1/models)", param="model")
    if model != served_model:
        raise RequestError(
            f"the model {model!r} does not exist; this server serves {served_model!r}",
            status=404,
            param="model",
            code="model_not_found",
        )
    if "messages" not in body:
        raise RequestError("messages is required", param="messages")
    _check_placeholders(body["messages"])
    try:
        conversation, images = conversation_from_messages(body["messages"], conv_mode)
    except PromptError as err:
        raise RequestError(str(err), param=err.param) from err
    if len(images) > max_images:
        raise RequestError(
            f"the messages hold {len(images)} images; this server takes at most {max_images}",
            param="messages",
            code="too_many_images",
        )
    _integer(body, "n", 1, 1)  # one choice per request: anything but 1 is refused
    max_tokens = _integer(body, "max_completion_tokens", 1, max_tokens_limit)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1, max_tokens_limit)
    stream = _flag(body, "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError("stream_options may hold only include_usage", param="stream_options")
    if options and not stream:
        raise RequestError("stream_options needs stream: true", param="stream_options")
    num_beams = _integer(body, "num_beams", 1, MAX_BEAMS) or 1
    if num_beams > 1 and stream:
        raise RequestError("num_beams > 1 cannot be streamed", param="num_beams")
    top_p = _number(body, "top_p", 0.0, 1.0, None)
    if top_p is not None and top_p <= 0:
        raise RequestError("top_p must be in (0, 1]", param="top_p")
    names = image_locations(body["messages"])
    if len(names) != len(images):  # a layout `conversation_from_messages` reads otherwise
        names = [f"image {k}" for k in range(len(images))]
    return ChatRequest(
        conversation=conversation,
        images=images,
        image_names=names,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0, 0.0),
        top_p=top_p,
        num_beams=num_beams,
        stop=_stop(body.get("stop")),
        stream=stream,
        include_usage=_flag(options, "include_usage"),
    )


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def completion_object(completion_id: str, model: str, completion: Completion) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage(completion),
    }


def chunk_object(
    completion_id: str,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage_of: Completion | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk`; `delta=None` makes the usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage_of is not None:
        chunk["usage"] = usage(usage_of)
    return chunk


def model_list(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model, created)]}


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "inverse-llava"}
