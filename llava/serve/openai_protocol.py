"""OpenAI's chat-completions wire format: request validation and response objects.

Objects follow the OpenAI API reference (https://platform.openai.com/docs/api-reference/chat) as
the official `openai` client reads them: `chat.completion`, `chat.completion.chunk` (with
`choices[].delta`), `usage`, the `list` of `model` objects, and the error object
`{"error": {"message", "type", "param", "code"}}`.

Beyond OpenAI's parameters, `num_beams` (beam search; not with `stream`) may be passed in the
body (`extra_body` in the client).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llava.conversation import Conversation
from llava.inference import Completion, DecodingSettings, PromptError, conversation_from_messages

MAX_STOP_STRINGS = 4  # as OpenAI's API
MAX_BEAMS = 8
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


@dataclass(frozen=True)
class ChatRequest:
    """A validated request: its open conversation, its image sources in order, the answer budget
    the client asked for (None: the server's default), and its decoding."""

    conversation: Conversation
    images: list[Any]
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
    return ChatRequest(
        conversation=conversation,
        images=images,
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
