"""Connections that cannot hold the server: a deadline for request headers, and a shutdown with one.

uvicorn closes an idle keep-alive connection, but waits without end for the headers of a request
that has begun to arrive, and on SIGTERM waits without end for the requests in flight (a client
sending its body slowly keeps it alive). `serve` runs uvicorn with h11 and:

- `header_timeout_s`: a connection whose request headers are not complete this long after it
  opened (or after its previous response) is answered 408 and closed;
- `shutdown_timeout_s`: on SIGTERM or Ctrl-C the server stops accepting, lets the requests in
  flight finish for this long, then cancels them and exits.

The deadline for a request's body is the route's (`llava.serve.api.read_json_body`).
"""

from __future__ import annotations

import asyncio
import logging

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive within
    `header_timeout_s` (a class attribute: `serve` makes a subclass per value)."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request's headers are in
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers have the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        logger.info(
            "closed a connection from %s: no complete request headers within %g s",
            self.client,
            self.header_timeout_s,
        )
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def serve(app: ASGIApp, host: str, port: int, header_timeout_s: float, shutdown_timeout_s: float) -> None:
    """Run `app` on `host:port` until SIGTERM or Ctrl-C, with the deadlines above."""
    protocol = type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_graceful_shutdown=shutdown_timeout_s,
        log_level="warning",
    )
