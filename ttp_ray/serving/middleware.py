"""ASGI middleware of the ingress: the body-size cap (enforced before parsing) and request metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ttp_ray.serving.errors import error_response


class BodySizeLimitMiddleware:
    """Answer 413 when the body exceeds `max_bytes`, before anything parses it.

    A declared `Content-Length` over the cap is refused before reading a byte. Otherwise (chunked, or a lying
    length) the raw body is read up to the cap and refused at the first chunk past it; a body within the cap
    is replayed to the app (FastAPI buffers whole bodies anyway, so this adds no copy of consequence).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared < 0:
            await error_response(400, "Content-Length header is not a valid integer", param="Content-Length")(
                scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body, more, disconnected = bytearray(), True, False
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), disconnected, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body exceeds bounds.max_body_bytes={self.max_bytes} bytes",
                                  param="body")
        await response(scope, receive, send)


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A `receive` that yields the buffered body once, then defers to the real one (disconnect events)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _content_length(scope: Scope) -> int | None:
    """The declared length, None if absent, -1 if malformed."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


class MetricsMiddleware:
    """Count requests by endpoint and status and time them (`observe(route, status, seconds)`)."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, int, float], None], routes: frozenset[str]) -> None:
        self.app = app
        self._observe = observe
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        # Unknown paths share one label so scanners cannot blow up metric cardinality.
        endpoint = path if path in self._routes else "other"
        status = 500
        t0 = time.perf_counter()

        async def capturing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capturing_send)
        finally:
            self._observe(endpoint, status, time.perf_counter() - t0)
