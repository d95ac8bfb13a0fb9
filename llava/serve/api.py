"""An OpenAI-compatible chat server, with dynamic batching and a web demo page.

    python -m llava.serve.api --model-path CKPT [--model-base BASE] [--host 127.0.0.1] [--port 8000]

Routes: `POST /v1/chat/completions` (text and `image_url` parts; `stream: true` as server-sent
events), `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, and `GET /` (the demo page: upload an
image and chat, streamed). Requests that arrive together share one `generate` call
(`llava.inference.scheduler`); a greedy answer equals the one the request gets alone.

Images: data URLs always; local paths only under `--image-folder`; `http(s)` URLs only with
`--allow-remote-images`. Every refused request gets a 4xx with OpenAI's error object and the
server goes on serving. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from llava.extras import extra_imports
from llava.inference import ContextOverflowError, DecodingSettings, LoadedModel
from llava.inference.arguments import add_model_arguments, load_model
from llava.inference.images import ImageInputError, ImagePolicy, load_image_input
from llava.inference.scheduler import BatchScheduler
from llava.serve.openai_protocol import (
    ChatRequest,
    RequestError,
    chunk_object,
    completion_object,
    error_body,
    model_list,
    model_object,
    new_completion_id,
    parse_chat_request,
)

with extra_imports("llava.serve.api", "serve", as_command=__name__ == "__main__"):
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """What one request may hold: body bytes, images, and the answer budget when `max_tokens`
    is absent (cut to what the context leaves)."""

    max_body_bytes: int = 20 * 2**20
    max_images: int = 4
    default_max_tokens: int = 512


@dataclass
class ChatService:
    """The model behind the routes: prompt building, image decoding, context checks, batching."""

    engine: LoadedModel
    scheduler: BatchScheduler
    model_id: str
    conv_mode: str
    policy: ImagePolicy
    limits: ServerLimits
    created: int

    def prepare(self, request: ChatRequest) -> tuple[list[int], torch.Tensor | None, DecodingSettings]:
        """Prompt ids, pixels `[n, 3, H, W]` and decoding of a validated request (blocking work).

        Raises:
            RequestError: an image refused or unreadable, or the prompt over the context.
        """
        images = []
        for k, source in enumerate(request.images):
            try:
                images.append(load_image_input(source, self.policy, name=f"image {k}"))
            except ImageInputError as err:
                raise RequestError(str(err), param="messages", code="invalid_image") from err
        try:
            pixels = self.engine.encode_images(images)
        except ValueError as err:  # a text-only checkpoint
            raise RequestError(str(err), param="messages", code="invalid_image") from err
        ids = self.engine.prompt_ids(request.conversation)
        length = self.engine.prompt_length(ids)
        budget = request.max_tokens
        if budget is None:
            budget = min(self.limits.default_max_tokens, self.engine.context_len - length)
        if budget < 1:
            raise RequestError(
                f"the prompt takes {length} positions, the whole context of {self.engine.context_len}",
                param="messages",
                code="context_length_exceeded",
            )
        try:
            self.engine.check_fits(ids, budget)
        except ContextOverflowError as err:
            raise RequestError(str(err), param="messages", code="context_length_exceeded") from err
        return ids, pixels, request.settings(budget)


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON body, read up to `limit` bytes (413 beyond, 400 when not JSON)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(
            f"the request body is over the {limit}-byte limit", status=413, code="body_too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(
                f"the request body is over the {limit}-byte limit", status=413, code="body_too_large"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"the request body is not JSON ({err})", code="invalid_json") from err


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _stream(
    service: ChatService,
    prompt: list[int],
    pixels: torch.Tensor | None,
    settings: DecodingSettings,
    usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks, the finish chunk, usage if asked, `[DONE]`."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def on_delta(text: str) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    future = service.scheduler.submit(prompt, pixels, settings, on_delta)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
    completion_id, model = new_completion_id(), service.model_id
    yield _event(chunk_object(completion_id, model, {"role": "assistant", "content": ""}))
    while (text := await pieces.get()) is not None:
        yield _event(chunk_object(completion_id, model, {"content": text}))
    error = future.exception()
    if error is not None:
        yield _event(error_body(f"generation failed: {error}", "server_error"))
        return
    completion = future.result()
    yield _event(chunk_object(completion_id, model, {}, completion.finish_reason))
    if usage:
        yield _event(chunk_object(completion_id, model, None, usage_of=completion))
    yield "data: [DONE]\n\n"


def create_app(service: ChatService) -> FastAPI:
    """The routes over `service`; the scheduler is closed when the app shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.scheduler.close()

    app = FastAPI(title="Inverse-LLaVA", docs_url=None, redoc_url=None, lifespan=lifespan)
    page = (
        resources.files("llava.serve")
        .joinpath("static/chat.html")
        .read_text(encoding="utf-8")
        .replace("{{MODEL_ID}}", html.escape(service.model_id))
        .replace("{{DEFAULT_MAX_TOKENS}}", str(service.limits.default_max_tokens))
    )

    @app.exception_handler(RequestError)
    async def _refused(_: Request, err: RequestError) -> JSONResponse:
        logger.info("refused (%d): %s", err.status, err)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _failed(_: Request, err: Exception) -> JSONResponse:
        logger.exception("request failed")
        return JSONResponse(error_body(f"internal error: {err}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "batches": service.scheduler.batches}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list(service.model_id, service.created)

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != service.model_id:
            raise RequestError(f"the model {model_id!r} does not exist", status=404, code="model_not_found")
        return model_object(service.model_id, service.created)

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> str:
        return page

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_json_body(request, service.limits.max_body_bytes)
        chat = parse_chat_request(
            body,
            service.model_id,
            service.conv_mode,
            service.limits.max_images,
            service.engine.context_len,
        )
        prompt, pixels, settings = await run_in_threadpool(service.prepare, chat)
        if chat.stream:
            events = _stream(service, prompt, pixels, settings, chat.include_usage)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        completion = await asyncio.wrap_future(service.scheduler.submit(prompt, pixels, settings))
        return completion_object(new_completion_id(), service.model_id, completion)

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a checkpoint over OpenAI's chat-completions API.")
    add_model_arguments(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model-name", default=None, help="model id clients name (default: the folder's name)"
    )
    parser.add_argument(
        "--image-folder", default=None, help="local image paths are allowed only under this folder"
    )
    parser.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs")
    parser.add_argument("--max-images", type=int, default=ServerLimits.max_images, help="images per request")
    parser.add_argument("--max-body-bytes", type=int, default=ServerLimits.max_body_bytes)
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=ServerLimits.default_max_tokens,
        help="answer budget when a request gives no max_tokens",
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=16, help="requests per generate call (1: no batching)"
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=10.0, help="how long a batch waits for more requests"
    )
    return parser


def build_service(args: argparse.Namespace) -> ChatService:
    engine = load_model(args)
    limits = ServerLimits(args.max_body_bytes, args.max_images, args.default_max_tokens)
    policy = ImagePolicy(
        image_folder=Path(args.image_folder).expanduser() if args.image_folder else None,
        allow_remote=args.allow_remote_images,
        max_bytes=args.max_body_bytes,
    )
    scheduler = BatchScheduler(engine, args.max_batch_size, args.batch_wait_ms / 1000)
    return ChatService(
        engine, scheduler, args.model_name or engine.name, args.conv_mode, policy, limits, int(time.time())
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    service = build_service(args)
    logger.info(
        "serving %s on http://%s:%d (batches of up to %d)",
        service.model_id,
        args.host,
        args.port,
        args.max_batch_size,
    )
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
