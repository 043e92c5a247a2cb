"""The sharded model-call clients: warm connections at low load, shards filled in order."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.agents.drivers.clients import ShardedClient
from tests.fixtures.local_server import serve_locally


def echo_app(hold: asyncio.Event | None = None) -> Starlette:
    """Answers each request with the client port it came from (one port, one connection)."""

    async def echo(request: Request) -> JSONResponse:
        if hold is not None:
            await hold.wait()
        assert request.client is not None
        return JSONResponse({"port": request.client.port})

    return Starlette(routes=[Route("/v1/chat", echo, methods=["POST"])])


async def test_calls_one_after_another_reuse_one_connection():
    client = ShardedClient(max_connections=1000, shard_size=8)
    async with serve_locally(echo_app(), lifespan="off") as base:
        ports = {(await client.post(f"{base}/v1/chat", json={})).json()["port"] for _ in range(30)}
    await client.aclose()
    assert len(ports) == 1  # not one connection per shard in turn


async def test_concurrent_calls_fill_the_shards_in_order():
    hold = asyncio.Event()
    client = ShardedClient(max_connections=40, shard_size=8)
    async with serve_locally(echo_app(hold), lifespan="off") as base:
        calls = [asyncio.create_task(client.post(f"{base}/v1/chat", json={})) for _ in range(20)]
        for _ in range(200):
            if sum(client.busy) == 20:
                break
            await asyncio.sleep(0.01)
        busy = list(client.busy)
        hold.set()
        ports = {(await call).json()["port"] for call in calls}
    await client.aclose()
    assert busy == [8, 8, 4, 0, 0]
    assert len(ports) == 20
    assert client.busy == [0, 0, 0, 0, 0]
