"""ASGI middleware of ``fastdpr serve``: the API key, the body limit, and request metrics.

Plain ASGI (not Starlette's ``BaseHTTPMiddleware``): a refused request is answered before its body is
read, and nothing buffers a response.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from fastdpr.serve.errors import ClientError, error_response
from fastdpr.serve.metrics import ServeMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Endpoints named in metrics (anything else is counted as "other", so random paths cannot create series).
ENDPOINTS = ("/", "/search", "/embed", "/health", "/ready", "/info", "/metrics", "/openapi.json",
             "/v1/embeddings", "/v1/models")


class RequireApiKey:
    """Answers 401 to every request without ``Authorization: Bearer <api_key>``, except on ``open_paths``
    (``/health``: a liveness probe needs no secret). The key is compared in constant time
    (:func:`hmac.compare_digest`) and never logged or echoed."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Collection[str] = ("/health",)) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")
        self.open_paths = frozenset(open_paths)

    def authorized(self, scope: Scope) -> bool | None:
        """True for the right key, False for a wrong one, None when the request has no bearer token."""
        header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if header is None:
            return None
        scheme, _, token = bytes(header).strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        return hmac.compare_digest(token.strip(), self._key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        verdict = self.authorized(scope)
        if verdict:
            await self.app(scope, receive, send)
            return
        message = ("invalid API key" if verdict is False else
                   "this server requires an API key: send the header 'Authorization: Bearer <key>'")
        response = error_response(scope["path"], 401, message, {"WWW-Authenticate": "Bearer"}, code="invalid_api_key")
        await response(scope, receive, send)


class BodyLimit:
    """Refuses bodies above ``max_bytes`` with 413 (by Content-Length, or while a chunked body streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the body is larger than {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await error_response(scope["path"], 413, message)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            chunk = await receive()
            received += len(chunk.get("body", b""))
            if received > self.max_bytes:
                raise ClientError(413, message)
            return chunk

        await self.app(scope, limited, send)


class Metered:
    """Counts requests by endpoint and status, their latency, and the requests in flight."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
