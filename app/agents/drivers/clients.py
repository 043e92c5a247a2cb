"""The HTTP clients model calls go through: httpx clients in shards.

httpcore's connection pool re-scans all its connections (quadratically, with a ``select`` per
idle one) whenever a request starts or ends, so one pool holding a thousand connections to a
provider costs milliseconds of CPU per model call. Shards of ``SHARD_CONNECTIONS`` keep that
cost flat however many calls are in flight. A call goes to the first shard with a free
connection, so at low load the calls share a few warm connections (a provider's TLS handshake
is not paid per call) and the shards fill up one after another as load grows.
"""

from __future__ import annotations

import functools
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
        self.size = size
        self._limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        # Made on first use: at low load only the first shards ever are (each costs a scan
        # of the environment for proxies).
        self.clients: list[httpx.AsyncClient | None] = [None] * math.ceil(max_connections / size)
        self.busy = [0] * len(self.clients)  # calls in progress, per shard

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        shard = self._pick()
        client = self.clients[shard]
        if client is None:
            client = self.clients[shard] = httpx.AsyncClient(
                limits=self._limits, verify=shared_tls_context()
            )
        self.busy[shard] += 1
        try:
            return await client.post(url, json=json, headers=headers, timeout=timeout)
        finally:
            self.busy[shard] -= 1

    def _pick(self) -> int:
        """The first shard with a free connection; when every one is full, the least busy."""
        for shard, busy in enumerate(self.busy):
            if busy < self.size:
                return shard
        return min(range(len(self.busy)), key=self.busy.__getitem__)

    async def aclose(self) -> None:
        for client in self.clients:
            if client is not None:
                await client.aclose()


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context (httpx's default CA bundle) for every client of the process: each
    client would otherwise load the bundle again, about a megabyte and 25 ms apiece."""
    return ssl.create_default_context(cafile=certifi.where())
