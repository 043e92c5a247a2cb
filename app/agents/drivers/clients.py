"""The HTTP clients model calls go through: httpx clients in shards.

httpcore's connection pool re-scans all its connections (quadratically, with a ``select`` per
idle one) whenever a request starts or ends, so one pool holding a thousand connections to a
provider costs milliseconds of CPU per model call. Shards of ``SHARD_CONNECTIONS`` keep that
cost flat however many calls are in flight; calls are spread over the shards in turn.
"""

from __future__ import annotations

import itertools
import math
import ssl
from typing import Any, Protocol

import certifi
import httpx

SHARD_CONNECTIONS = 8


class ModelClient(Protocol):
    """What the drivers need of an HTTP client (``httpx.AsyncClient`` is one)."""

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response: ...


class ShardedClient:
    """At most ``max_connections`` connections, in httpx clients of ``shard_size`` each."""

    def __init__(self, max_connections: int, shard_size: int = SHARD_CONNECTIONS) -> None:
        size = max(1, min(shard_size, max_connections))
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        # One TLS context for all (httpx's default CA bundle): each would load it, about a
        # megabyte apiece.
        tls = ssl.create_default_context(cafile=certifi.where())
        self.clients = [
            httpx.AsyncClient(limits=limits, verify=tls)
            for _ in range(math.ceil(max_connections / size))
        ]
        self._turn = itertools.cycle(self.clients)

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        return await next(self._turn).post(url, json=json, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
