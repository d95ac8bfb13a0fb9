"""Who may talk to the server: the Host header, the browser's Origin, and the API key.

`RequestGuard` is ASGI middleware in front of every route. It refuses, with OpenAI's error object:

- a `Host` header that names none of the allowed hosts (400 `invalid_host`). A web page whose
  domain an attacker re-points at 127.0.0.1 (DNS rebinding) reaches the server under the
  attacker's name, so checking the name defeats it;
- a request from a browser page of another origin (403 `cross_origin_refused`): browsers send
  `Origin` with every cross-origin request, including the "simple" `text/plain` POSTs they make
  without asking the server first. Same-origin requests (the demo page) and origins named in
  `allowed_origins` (answered with CORS headers by Starlette's `CORSMiddleware`) pass;
- without `Authorization: Bearer <api_key>` (when a key is set), every `/v1/` route (401
  `invalid_api_key`), as OpenAI's API does; the official client sends its `api_key` so.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from llava.serve.openai_protocol import RequestError

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
ANY = "*"


def host_name(host: str) -> str:
    """The name of a `Host` header's value, without port: `[::1]:8000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_host_names(bind: str, extra: Collection[str]) -> frozenset[str] | None:
    """The `Host` names a server bound to `bind` answers to: the bound address (and every name
    of this machine's loopback when it is one) plus `extra`; None (any) when `extra` holds `*`.

    Raises:
        ValueError: `bind` listens on every address (0.0.0.0, ::) and `extra` names no host.
    """
    names = {host_name(name) for name in extra}
    if ANY in names:
        return None
    bind = host_name(bind)
    if bind in ("", "0.0.0.0", "::"):
        if not names:
            raise ValueError(
                f"--host {bind or '(empty)'} listens on every address: name the host names clients use "
                "with --allowed-hosts (or '*' for any)"
            )
        return frozenset(names)
    names.add(bind)
    if _is_loopback(bind):
        names |= LOOPBACK_NAMES
    return frozenset(names)


def _same_origin(origin: str, scheme: str, host: str) -> bool:
    return origin.lower() == f"{scheme}://{host}".lower()


class RequestGuard:
    """ASGI middleware: refuses requests with a foreign Host, a foreign Origin, or no API key.

    `allowed_hosts` None accepts any Host; `allowed_origins` may hold `*` (any origin); `api_key`
    None asks for none.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: frozenset[str] | None,
        allowed_origins: Collection[str] = (),
        api_key: str | None = None,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)
        self.api_key = api_key
        if self.allowed_origins:
            app = CORSMiddleware(
                app,
                allow_origins=[ANY] if ANY in self.allowed_origins else sorted(self.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        logger.info("refused (%d): %s", refusal.status, refusal)
        headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
        await JSONResponse(refusal.body(), status_code=refusal.status, headers=headers)(scope, receive, send)

    def refusal(self, scope: Scope) -> RequestError | None:
        """Why the request in `scope` is refused, or None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return RequestError(
                f"the Host header {host!r} names no host this server answers to (see --allowed-hosts)",
                code="invalid_host",
            )
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, scope["scheme"], host):
            return RequestError(
                f"a cross-origin request from {origin!r} is refused (see --allowed-origins)",
                status=403,
                code="cross_origin_refused",
            )
        needs_key = self.api_key is not None and scope["path"].startswith("/v1/")
        if needs_key and scope["method"] != "OPTIONS":  # a CORS preflight carries no credentials
            if not _key_matches(headers.get("authorization", ""), self.api_key):
                return RequestError(
                    "a valid API key is required (header 'Authorization: Bearer <key>')",
                    status=401,
                    code="invalid_api_key",
                )
        return None

    def _origin_allowed(self, origin: str, scheme: str, host: str) -> bool:
        if _same_origin(origin, scheme, host):
            return True
        return ANY in self.allowed_origins or origin.rstrip("/").lower() in self.allowed_origins


def _key_matches(authorization: str, api_key: str) -> bool:
    scheme, _, key = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), api_key.encode())
