"""Live connections a user cannot pile up or keep after losing the right to them."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.config import StreamLimits
from tests.fixtures.api import live_api
from tests.fixtures.executions import start
from tests.fixtures.sockets import receive, send, ws_url


async def paused_execution(http: httpx.AsyncClient, account) -> str:
    """An execution whose stream stays open: it is paused before any worker runs it."""
    created = await start(http, account, "steps-3")
    await http.post(f"/api/agents/{created['id']}/pause", headers=account.headers)
    return str(created["id"])


@contextlib.asynccontextmanager
async def open_stream(http: httpx.AsyncClient, url: str, headers: dict[str, str]):
    async with http.stream("GET", url, headers=headers, timeout=30) as response:
        yield response


async def test_one_user_cannot_hold_more_than_the_cap(alice, bob, make_settings):
    settings = make_settings(streams=StreamLimits(max_per_user=2))
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        execution = await paused_execution(http, alice)
        url = f"/api/agents/{execution}/events"
        async with open_stream(http, url, alice.headers) as first:
            assert first.status_code == 200
            async with open_stream(http, url, alice.headers) as second:
                assert second.status_code == 200
                third = await http.get(url, headers=alice.headers)
                assert third.status_code == 429
                assert third.json()["type"] == "/problems/too-many-streams"
                assert third.headers["retry-after"]
                # The dashboard socket counts too.
                async with connect(ws_url(base, alice.token)) as ws:
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 3)
                    assert ws.close_code == 1008
                # Another user is not affected.
                bob_execution = await paused_execution(http, bob)
                async with open_stream(
                    http, f"/api/agents/{bob_execution}/events", bob.headers
                ) as bobs:
                    assert bobs.status_code == 200
        await asyncio.sleep(0.2)  # closed streams give their slots back
        async with open_stream(http, url, alice.headers) as reopened:
            assert reopened.status_code == 200


async def test_a_revoked_token_closes_its_open_stream(alice, make_settings):
    settings = make_settings(streams=StreamLimits(recheck_seconds=0.2))
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        execution = await paused_execution(http, alice)
        token = (await http.post("/api/tokens", json={"name": "tab"}, headers=alice.headers)).json()
        headers = {"Authorization": f"Bearer {token['token']}"}
        async with open_stream(http, f"/api/agents/{execution}/events", headers) as stream:
            assert stream.status_code == 200
            await http.delete(f"/api/tokens/{token['id']}", headers=alice.headers)
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                async for _ in stream.aiter_bytes():
                    pass
            assert time.monotonic() - started < 3
        async with connect(ws_url(base, token["token"])) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4401


async def test_a_revoked_token_closes_its_dashboard_socket(alice, make_settings):
    settings = make_settings(streams=StreamLimits(recheck_seconds=0.2))
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        token = (await http.post("/api/tokens", json={"name": "ws"}, headers=alice.headers)).json()
        async with connect(ws_url(base, token["token"])) as ws:
            await send(ws, action="ping")
            assert (await receive(ws))["event"] == "pong"
            await http.delete(f"/api/tokens/{token['id']}", headers=alice.headers)
            with contextlib.suppress(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
            assert ws.close_code == 1008


async def test_a_stream_ends_at_its_lifetime_and_resumes_where_it_was(alice, make_settings):
    settings = make_settings(streams=StreamLimits(max_lifetime_seconds=0.5))
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        execution = await paused_execution(http, alice)
        started = time.monotonic()
        chunks = []
        async with open_stream(http, f"/api/agents/{execution}/events", alice.headers) as s:
            async for chunk in s.aiter_bytes():  # ends cleanly: no error mid-stream
                chunks.append(chunk)
        assert 0.4 < time.monotonic() - started < 3
    assert b"event: status.changed" in b"".join(chunks)


async def test_subscribing_is_rate_limited(alice, make_settings):
    settings = make_settings(streams=StreamLimits(subscribes_per_minute=3))
    async with live_api(settings) as base, connect(ws_url(base, alice.token)) as ws:
        for _ in range(3):
            await send(ws, action="subscribe", channel=f"user.{alice.user.id}.agents")
            assert (await receive(ws))["event"] == "subscribed"
        await send(ws, action="subscribe", channel=f"user.{alice.user.id}.agents")
        refused = await receive(ws)
    assert refused == {
        "event": "error",
        "error": "too many subscriptions a minute",
        "channel": f"user.{alice.user.id}.agents",
    }


async def test_an_open_stream_keeps_being_counted(alice, make_settings, redis):
    settings = make_settings(streams=StreamLimits(recheck_seconds=0.2, max_per_user=1))
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        execution = await paused_execution(http, alice)
        url = f"/api/agents/{execution}/events"
        async with open_stream(http, url, alice.headers) as stream:
            assert stream.status_code == 200
            await asyncio.sleep(1.5)  # past the slot key's first expiry
            assert await redis.ttl(f"streams:user:{alice.user.id}") > 0
            assert (await http.get(url, headers=alice.headers)).status_code == 429
