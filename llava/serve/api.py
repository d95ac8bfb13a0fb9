"""An OpenAI-compatible chat server, with dynamic batching and a web demo page.

    python -m llava.serve.api --model-path CKPT [--model-base BASE] [--host 127.0.0.1] [--port 8000]

Routes: `POST /v1/chat/completions` (text and `image_url` parts; `stream: true` as server-sent
events), `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, and `GET /` (the demo page: upload an
image and chat, streamed). Requests are batched: by default continuously (`--scheduler
continuous`, `llava.inference.continuous`: a request joins the running batch at the next decode
step and leaves it when it ends), or by request (`--scheduler request`, `llava.inference.scheduler`:
requests that arrive together share one `generate` call). A greedy answer equals the one the
request gets alone.

Images: data URLs always; local paths only under `--image-folder`; `http(s)` URLs only with
`--allow-remote-images`, fetched on a pool of their own. Every image's pixels are checked from its
header before it is decoded. Every refused request gets a 4xx with OpenAI's error object and the
server goes on serving. Binds to 127.0.0.1 unless told otherwise, answers only to its own host
names and same-origin pages (`llava.serve.guard`), and asks for an API key when given one.

A request whose client leaves (a dropped stream or connection) stops generating at the next step;
slow headers and bodies meet deadlines, and SIGTERM stops the server within one
(`llava.serve.connections`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import html
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from llava.extras import extra_imports
from llava.inference import DecodingSettings
from llava.inference.arguments import add_model_arguments, load_model
from llava.inference.continuous import ContinuousScheduler
from llava.inference.images import ImagePolicy, RemoteFetcher
from llava.inference.scheduler import BatchScheduler, GenerationCancelled
from llava.serve.openai_protocol import (
    RequestError,
    chunk_object,
    completion_object,
    decode_json_body,
    error_body,
    model_list,
    model_object,
    new_completion_id,
    parse_chat_request,
)
from llava.serve.service import ChatService, ServerLimits

with extra_imports("llava.serve.api", "serve", as_command=__name__ == "__main__"):
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from llava.serve.connections import serve
    from llava.serve.guard import RequestGuard, allowed_host_names

logger = logging.getLogger(__name__)

SCHEDULERS = {"continuous": ContinuousScheduler, "request": BatchScheduler}


async def _read_body(request: Request, limit: int) -> bytes:
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
    return b"".join(chunks)


async def read_json_body(request: Request, limit: int, timeout_s: float) -> Any:
    """The request's JSON body, read up to `limit` bytes within `timeout_s` seconds (413 beyond
    the size, 408 beyond the time, 400 when not JSON or unsafe: `decode_json_body`)."""
    try:
        raw = await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError as err:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s", status=408, code="body_timeout"
        ) from err
    return decode_json_body(raw)


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected (call it after the body is read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _answer(
    service: ChatService,
    request: Request,
    prompt: list[int],
    pixels: torch.Tensor | None,
    settings: DecodingSettings,
) -> dict[str, Any] | None:
    """The completion object, or None when the client left first (its generation is cancelled)."""
    cancelled = threading.Event()
    answer = asyncio.wrap_future(service.submit(prompt, pixels, settings, cancelled))
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # the client left, or this handler was cancelled (shutdown)
        gone.cancel()
        if not answer.done():
            cancelled.set()
            answer.cancel()
    if not answer.done() or answer.cancelled():
        logger.info("the client left: its generation is cancelled")
        return None
    try:
        completion = answer.result()
    except GenerationCancelled as err:
        raise RequestError(
            "the server is shutting down", status=503, code="shutting_down", type="server_error"
        ) from err
    return completion_object(new_completion_id(), service.model_id, completion)


async def _stream(
    service: ChatService,
    prompt: list[int],
    pixels: torch.Tensor | None,
    settings: DecodingSettings,
    usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks, the finish chunk, usage if asked, `[DONE]`.
    When the client leaves, Starlette cancels this generator, which cancels the generation."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = threading.Event()

    def deliver(text: str | None) -> None:  # from the batch worker's thread
        if not cancelled.is_set():
            with contextlib.suppress(RuntimeError):  # the event loop has closed (shutdown)
                loop.call_soon_threadsafe(pieces.put_nowait, text)

    future = service.submit(prompt, pixels, settings, cancelled, deliver)
    future.add_done_callback(lambda _: deliver(None))
    completion_id, model = new_completion_id(), service.model_id
    try:
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
    finally:
        if not future.done():
            logger.info("the client left a stream: its generation is cancelled")
        cancelled.set()


def create_app(service: ChatService, guard: Mapping[str, Any] | None = None) -> Any:
    """The routes over `service`, behind `RequestGuard(**guard)` when given; the scheduler and
    the fetch pool are closed when the app shuts down (requests still running are cancelled)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.fetcher.close()
        await run_in_threadpool(functools.partial(service.scheduler.close, cancel=True, timeout_s=30))

    app = FastAPI(title="Inverse-LLaVA", docs_url=None, redoc_url=None, lifespan=lifespan)
    page = (
        resources.files("llava.serve")
        .joinpath("static/chat.html")
        .read_text(encoding="utf-8")
        .replace("{{MODEL_ID}}", html.escape(service.model_id))
        .replace("{{DEFAULT_MAX_TOKENS}}", str(service.limits.default_max_tokens))
        .replace("{{API_KEY_REQUIRED}}", json.dumps(bool(guard and guard.get("api_key"))))
    )

    @app.exception_handler(RequestError)
    async def _refused(_: Request, err: RequestError) -> JSONResponse:
        logger.info("refused (%d): %s", err.status, err)
        # The rest of an unread body would be read as the next request: close the connection.
        headers = {"Connection": "close"} if err.status in (408, 413) else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

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
        scheduler = service.scheduler
        health = {
            "status": "ok",
            "model": service.model_id,
            "scheduler": scheduler.kind,
            "batches": scheduler.batches,
            "cancelled": scheduler.cancelled,
        }
        if isinstance(scheduler, ContinuousScheduler):
            health["steps"] = scheduler.steps
        return health

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
        limits = service.limits
        body = await read_json_body(request, limits.max_body_bytes, limits.body_timeout_s)
        chat = parse_chat_request(
            body, service.model_id, service.conv_mode, limits.max_images, service.engine.context_len
        )
        fetched = await service.fetch_remote_images(chat)
        prepare = functools.partial(service.prepare, chat, fetched)
        if chat.images:
            prepared = await anyio.to_thread.run_sync(prepare, limiter=service.image_limiter)
        else:
            prepared = await run_in_threadpool(prepare)
        if chat.stream:
            events = _stream(service, *prepared, chat.include_usage)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        answer = await _answer(service, request, *prepared)
        if answer is None:
            return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        return answer

    if guard is None:
        return app
    return RequestGuard(app, **guard)


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve a checkpoint over OpenAI's chat-completions API.")
    add_model_arguments(parser)
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    server.add_argument("--port", type=int, default=8000)
    server.add_argument(
        "--model-name", default=None, help="model id clients name (default: the folder's name)"
    )
    server.add_argument(
        "--scheduler",
        choices=sorted(SCHEDULERS),
        default="continuous",
        help="continuous: requests join and leave the running batch at every decode step; "
        "request: requests that arrive together share one generate call (default: continuous)",
    )
    server.add_argument(
        "--max-batch-size",
        type=int,
        default=16,
        help="requests decoded together (per generate call with --scheduler request; 1: no batching)",
    )
    server.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long an idle worker waits for more requests to start with the first",
    )
    server.add_argument(
        "--default-max-tokens",
        type=int,
        default=ServerLimits.default_max_tokens,
        help="answer budget when a request gives no max_tokens",
    )
    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        default=os.environ.get("LLAVA_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1/ routes (default: $LLAVA_API_KEY; none when unset)",
    )
    access.add_argument(
        "--allowed-hosts",
        type=_names,
        default=[],
        metavar="HOST[,HOST...]",
        help="Host header names answered besides the bound address ('*': any)",
    )
    access.add_argument(
        "--allowed-origins",
        type=_names,
        default=[],
        metavar="ORIGIN[,ORIGIN...]",
        help="web origins (https://app.example) whose pages may call the API ('*': any; default: none)",
    )
    images = parser.add_argument_group("images")
    images.add_argument(
        "--image-folder", default=None, help="local image paths are allowed only under this folder"
    )
    images.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs")
    images.add_argument("--max-images", type=int, default=ServerLimits.max_images, help="images per request")
    images.add_argument(
        "--max-image-pixels",
        type=int,
        default=ServerLimits.max_image_pixels,
        help="width x height per image, read from its header before decoding (default: 4096x4096)",
    )
    images.add_argument(
        "--max-request-pixels",
        type=int,
        default=ServerLimits.max_request_pixels,
        help="width x height of a request's images together (default: twice --max-image-pixels' default)",
    )
    images.add_argument(
        "--image-workers", type=int, default=4, help="requests whose images are decoded at once"
    )
    images.add_argument(
        "--remote-timeout-s", type=float, default=10.0, help="time for a request's remote images, in all"
    )
    images.add_argument("--remote-fetch-workers", type=int, default=4, help="threads fetching remote images")
    images.add_argument(
        "--remote-fetch-queue",
        type=int,
        default=16,
        help="remote images that may wait for a fetch thread; beyond, requests get 429",
    )
    connections = parser.add_argument_group("connections")
    connections.add_argument("--max-body-bytes", type=int, default=ServerLimits.max_body_bytes)
    connections.add_argument(
        "--header-timeout-s", type=float, default=10.0, help="deadline for a request's headers"
    )
    connections.add_argument(
        "--body-timeout-s",
        type=float,
        default=ServerLimits.body_timeout_s,
        help="deadline for a request's body",
    )
    connections.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=10.0,
        help="on SIGTERM, how long requests in flight may finish before they are cancelled",
    )
    return parser


def build_service(args: argparse.Namespace) -> ChatService:
    engine = load_model(args)
    limits = ServerLimits(
        max_body_bytes=args.max_body_bytes,
        max_images=args.max_images,
        max_image_pixels=args.max_image_pixels,
        max_request_pixels=args.max_request_pixels,
        default_max_tokens=args.default_max_tokens,
        body_timeout_s=args.body_timeout_s,
    )
    policy = ImagePolicy(
        image_folder=Path(args.image_folder).expanduser() if args.image_folder else None,
        allow_remote=args.allow_remote_images,
        max_bytes=args.max_body_bytes,
        timeout_s=args.remote_timeout_s,
        max_pixels=args.max_image_pixels,
    )
    scheduler = SCHEDULERS[args.scheduler](engine, args.max_batch_size, args.batch_wait_ms / 1000)
    return ChatService(
        engine,
        scheduler,
        args.model_name or engine.name,
        args.conv_mode,
        policy,
        limits,
        int(time.time()),
        RemoteFetcher(policy, args.remote_fetch_workers, args.remote_fetch_queue),
        anyio.CapacityLimiter(args.image_workers),
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        hosts = allowed_host_names(args.host, args.allowed_hosts)
    except ValueError as err:
        parser.error(str(err))
    service = build_service(args)
    guard = {"allowed_hosts": hosts, "allowed_origins": args.allowed_origins, "api_key": args.api_key}
    logger.info(
        "serving %s on http://%s:%d (%s batching of up to %d requests; %s)",
        service.model_id,
        args.host,
        args.port,
        args.scheduler,
        args.max_batch_size,
        "API key required" if args.api_key else "no API key",
    )
    serve(create_app(service, guard), args.host, args.port, args.header_timeout_s, args.shutdown_timeout_s)


if __name__ == "__main__":
    main()
