"""Times every API request into :data:`app.metrics.HTTP_REQUESTS`, labelled by route template."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics


class RequestMetrics:
    """Pure ASGI middleware: no buffering, streams pass through as they are. A request that
    matched no route is labelled ``unmatched``, so random paths add no series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def timed_send(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start":
                observed = True
                _observe(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not observed:  # failed, or the client left, before any response
                _observe(scope, 500, started)


# Any other method a client sends is one series, whatever it is.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(scope: Scope, status: int, started: float) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    method = scope["method"] if scope["method"] in _METHODS else "other"
    metrics.HTTP_REQUESTS.labels(method, template or "unmatched", str(status)).observe(
        time.perf_counter() - started
    )
