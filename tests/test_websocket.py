"""The dashboard WebSocket through a real server and a real WebSocket client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures.api import live_api
from tests.fixtures.executions import start
from tests.fixtures.sockets import receive, send, ws_url
from tests.fixtures.users import make_account


async def test_subscriptions_deliver_events_of_authorized_channels(
    alice, bob, make_settings, run_worker
):
    settings = make_settings()
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "steps-3")
        headers = {"Authorization": f"Bearer {alice.token}"}
        async with connect(ws_url(base), additional_headers=headers) as ws:
            await send(ws, action="subscribe", channel=f"agent.{created['id']}")
            assert await receive(ws) == {
                "event": "subscribed", "channel": f"agent.{created['id']}"
            }  # fmt: skip
            await send(ws, action="subscribe", channel=f"user.{alice.user.id}.agents")
            assert (await receive(ws))["event"] == "subscribed"
            await send(ws, action="subscribe", channel=f"user.{bob.user.id}.agents")
            refused = await receive(ws)
            assert refused["event"] == "error"
            assert refused["channel"] == f"user.{bob.user.id}.agents"
            await run_worker(settings)
            messages = [await receive(ws) for _ in range(14)]
            # Those were all: a reply to a ping comes next.
            await send(ws, action="ping")
            assert await receive(ws) == {"event": "pong"}
    by_channel: dict[str, list[tuple[str, Any]]] = {}
    for m in messages:
        data = m["data"]
        key = data.get("status") or data.get("step_number") or data.get("event_type")
        by_channel.setdefault(m["channel"], []).append((m["event"], key))
        assert isinstance(m["id"], int)
    # The execution's channel also carries each step's tool calls, as log events before it.
    tools = [("log", "tool_called"), ("log", "tool_completed")]
    assert by_channel == {
        f"agent.{created['id']}": [
            ("status.changed", "running"), *tools, ("step.completed", 1), *tools,
            ("step.completed", 2), ("step.completed", 3), ("status.changed", "completed"),
        ],
        f"user.{alice.user.id}.agents": [
            ("status.changed", "running"), ("step.completed", 1), ("step.completed", 2),
            ("step.completed", 3), ("status.changed", "completed"),
        ],
    }  # fmt: skip


async def test_another_users_execution_and_the_admin_channel_are_refused(
    alice, bob, sessions, make_settings, run_worker
):
    settings = make_settings()
    admin = await make_account(sessions, "root@example.com", is_admin=True)
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "steps-3")
        async with connect(ws_url(base, bob.token)) as ws:
            for channel in (f"agent.{created['id']}", "admin.agents", "agent.nope", "x.y"):
                await send(ws, action="subscribe", channel=channel)
                message = await receive(ws)
                assert (message["event"], message["channel"]) == ("error", channel)
        # The events after the first stay unread: an unbounded client queue, or the client
        # would stop reading at 16 and miss the server's close frame (a 10 s close timeout).
        async with connect(ws_url(base, admin.token), max_queue=None) as ws:
            await send(ws, action="subscribe", channel="admin.agents")
            assert (await receive(ws))["event"] == "subscribed"
            await send(ws, action="subscribe", channel=f"agent.{created['id']}")
            assert (await receive(ws))["event"] == "subscribed"
            await run_worker(settings)
            first = await receive(ws)
            assert first["event"] == "status.changed"
            assert first["data"]["execution_id"] == created["id"]


async def test_protocol_messages_and_close_codes(alice, make_settings):
    settings = make_settings()
    async with live_api(settings) as base:
        with pytest.raises(ConnectionClosed) as closed:
            async with connect(ws_url(base)) as ws:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        with pytest.raises(ConnectionClosed) as closed:
            async with connect(ws_url(base, "wrong")) as ws:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        async with connect(ws_url(base, alice.token)) as ws:
            await send(ws, action="ping")
            assert await receive(ws) == {"event": "pong"}
            await ws.send("not json")
            assert (await receive(ws))["event"] == "error"
            await send(ws, action="dance")
            assert (await receive(ws))["error"] == "unknown action 'dance'"
            await send(ws, action="unsubscribe", channel="admin.agents")
            assert (await receive(ws))["event"] == "unsubscribed"
            await ws.close()
            assert ws.close_code == 1000
