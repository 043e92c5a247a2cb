"""Live progress over SSE: replay then live, resumable, across API replicas, slow clients cut."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.executions.events import execution_channel
from app.streams.hub import Hub
from tests.conftest import scripted_type
from tests.fixtures.api import api_client, live_api
from tests.fixtures.executions import start
from tests.fixtures.processes import service_env
from tests.fixtures.users import make_account


async def read_events(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], *, stop_after: int | None = None
) -> list[dict[str, Any]]:
    """SSE events as {event, id, data} until the stream ends (or ``stop_after`` events)."""
    received: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with http.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line:
                if "event" in current:
                    current["data"] = json.loads(current["data"])
                    received.append(current)
                    if stop_after is not None and len(received) >= stop_after:
                        break
                current = {}
                continue
            field, _, value = line.partition(":")
            if field in ("event", "id", "data"):
                current[field] = value.strip()
    return received


def summary(received: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """Each event's name and what it is about: a status, a step number, a log's event type."""

    def about(data: dict[str, Any]) -> Any:
        return data.get("status") or data.get("step_number") or data.get("event_type")

    return [(e["event"], about(e["data"])) for e in received]


def tool_step(number: int) -> list[tuple[str, Any]]:
    """The events of a step that called one tool: its tool rows, then the step."""
    return [("log", "tool_called"), ("log", "tool_completed"), ("step.completed", number)]


async def test_sse_replays_then_streams_live_until_finished(alice, make_settings, run_worker):
    settings = make_settings(agent_types={"slow": scripted_type(3, delay=0.1)})
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "slow")
        worker = asyncio.create_task(run_worker(settings))
        received = await read_events(http, f"/api/agents/{created['id']}/events", alice.headers)
        await worker
        replayed = await read_events(http, f"/api/agents/{created['id']}/events", alice.headers)
    # A replay after the end is the same stream, counts as they were at each status change.
    assert replayed == received
    counts = [
        (e["data"]["step_count"], e["data"]["token_usage"] > 0)
        for e in received
        if e["event"] == "status.changed"
    ]
    assert counts == [(0, False), (0, False), (3, True)]
    assert summary(received) == [
        ("status.changed", "pending"),
        ("status.changed", "running"),
        *tool_step(1),
        *tool_step(2),
        ("step.completed", 3),
        ("status.changed", "completed"),
        ("finished", "completed"),
    ]
    ids = [int(e["id"]) for e in received if "id" in e]
    assert ids == sorted(set(ids))
    called, completed, step = (e["data"] for e in received[2:5])
    assert {"execution_id", "step_number", "step_type", "has_tool_calls", "tool_names",
            "tokens_used", "token_usage", "timestamp"} <= set(step)  # fmt: skip
    steps = [e["data"] for e in received if e["event"] == "step.completed"]
    assert [(s["tokens_used"], s["token_usage"]) for s in steps] == [(15, 15), (15, 30), (15, 45)]
    assert (called["level"], called["context"]["tool"]) == ("info", "list_files")
    assert completed["context"]["tool_call_id"] == called["context"]["tool_call_id"]
    assert (completed["level"], completed["context"]["outcome"]) == ("info", "ok")
    assert called["execution_id"] == completed["execution_id"] == created["id"]


async def test_reconnecting_with_last_event_id_misses_and_repeats_nothing(
    alice, make_settings, run_worker
):
    settings = make_settings(agent_types={"slow": scripted_type(6, delay=0.1)})
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "slow")
        worker = asyncio.create_task(run_worker(settings))
        url = f"/api/agents/{created['id']}/events"
        first = await read_events(http, url, alice.headers, stop_after=8)  # ... step 2
        assert summary(first)[-1] == ("step.completed", 2)
        resume = {**alice.headers, "Last-Event-ID": first[-1]["id"]}
        second = await read_events(http, url, resume)
        await worker
    steps = [e["data"]["step_number"] for e in first + second if e["event"] == "step.completed"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert summary(first + second) == [
        ("status.changed", "pending"),
        ("status.changed", "running"),
        *(event for number in range(1, 6) for event in tool_step(number)),
        ("step.completed", 6),
        ("status.changed", "completed"),
        ("finished", "completed"),
    ]
    assert second[-1] == {"event": "finished", "data": {"status": "completed"}}
    # after_id in the query works the same way
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        tail = await read_events(http, f"{url}?after_id={first[-1]['id']}", alice.headers)
    assert [e["event"] for e in tail] == [e["event"] for e in second]


async def test_a_finished_execution_replays_and_closes(alice, make_settings, run_worker):
    settings = make_settings()
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "steps-3")
        await run_worker(settings)
        received = await read_events(http, f"/api/agents/{created['id']}/events", alice.headers)
    assert received[-1]["event"] == "finished"
    assert [e["event"] for e in received].count("step.completed") == 3
    assert [e["event"] for e in received].count("log") == 4


async def test_streams_are_private_and_the_admin_stream_is_admin_only(
    alice, bob, sessions, make_settings
):
    admin = await make_account(sessions, "root@example.com", is_admin=True)
    settings = make_settings()
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "steps-3")
        url = f"/api/agents/{created['id']}/events"
        assert (await http.get(url, headers=bob.headers)).status_code == 404
        assert (await http.get(url)).status_code == 401
        admin_url = f"/api/admin/agents/{created['id']}/stream"
        assert (await http.get(admin_url, headers=alice.headers)).status_code == 403
        first = await read_events(http, admin_url, admin.headers, stop_after=1)
        assert first[0]["data"]["status"] == "pending"
        owner_view = await read_events(http, url, admin.headers, stop_after=1)
        assert owner_view == first


async def test_two_api_replicas_stream_the_same_events(
    alice, settings, tmp_path, make_settings, run_worker
):
    env = service_env(settings, tmp_path)
    ports = [18900 + (i * 7) + (hash(str(tmp_path)) % 500) for i in range(2)]
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]  # fmt: skip
    own = make_settings()
    try:
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}") for p in ports]
        for client in clients:
            for _ in range(300):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        created = await start(clients[0], alice, "demo")  # a type the replicas know
        url = f"/api/agents/{created['id']}/events"
        readers = [asyncio.create_task(read_events(c, url, alice.headers)) for c in clients]
        await asyncio.sleep(0.3)
        await run_worker(own)
        streams = await asyncio.gather(*readers)
        for client in clients:
            await client.aclose()
    finally:
        for replica in replicas:
            replica.terminate()
            replica.wait(10)
    assert streams[0] == streams[1]
    assert streams[0][-1]["event"] == "finished"
    assert [e["event"] for e in streams[0]].count("step.completed") == 3


@contextlib.asynccontextmanager
async def running_hub(redis_url: str, **options: Any) -> AsyncIterator[Hub]:
    hub = Hub(redis_url, **options)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


async def test_a_subscriber_that_does_not_read_is_cut_off_not_buffered(test_redis_url, redis):
    async with running_hub(test_redis_url, queue_size=10) as hub:
        channel = execution_channel("slow-reader")
        slow = await hub.subscribe(channel)
        fast = await hub.subscribe(channel)
        for number in range(50):
            await redis.publish(
                channel, json.dumps({"event": "log", "id": number, "data": {"n": number}})
            )
            if number % 5 == 0:  # the fast one keeps up
                while not fast.queue.empty():
                    fast.queue.get_nowait()
        for _ in range(100):
            if slow.overflowed:
                break
            await asyncio.sleep(0.01)
        assert slow.overflowed
        assert slow.queue.qsize() <= 10
        assert not fast.overflowed  # one slow client does not hold the others back
        hub.release(slow)
        hub.release(fast)
        assert hub.subscriber_count == 0


async def redis_subscribers(redis: Any, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_the_last_release_unsubscribes_redis_and_a_quick_return_keeps_the_feed(
    test_redis_url, redis
):
    async with running_hub(test_redis_url) as hub:
        channel = execution_channel("release-then-return")
        first = await hub.subscribe(channel)
        assert await redis_subscribers(redis, channel) == 1
        hub.release(first)
        hub.release(first)  # twice is harmless
        # A stream for the same channel arrives before the background unsubscribe ran.
        second = await hub.subscribe(channel)
        await asyncio.sleep(0.1)
        assert await redis_subscribers(redis, channel) == 1
        await redis.publish(channel, json.dumps({"event": "log", "id": 1, "data": {}}))
        received = await asyncio.wait_for(second.queue.get(), 5)
        assert received is not None
        assert received.id == 1
        hub.release(second)
        for _ in range(100):
            if await redis_subscribers(redis, channel) == 0:
                break
            await asyncio.sleep(0.01)
        assert await redis_subscribers(redis, channel) == 0
        assert hub.subscriber_count == 0


@pytest.mark.parametrize("header", ["abc", "-5", "9" * 5000, str(2**63), "1e3"])
async def test_a_garbled_last_event_id_is_refused(alice, client, header):
    created = await start(client, alice, "steps-3")
    response = await client.get(
        f"/api/agents/{created['id']}/events", headers={**alice.headers, "Last-Event-ID": header}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "Last-Event-ID" in response.json()["detail"]


async def test_a_client_that_stops_reading_is_disconnected(alice, make_settings, redis):
    from urllib.parse import urlsplit

    from app.streams.hub import QUEUE_SIZE

    settings = make_settings()
    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        created = await start(http, alice, "steps-3")
        parts = urlsplit(base)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            (
                f"GET /api/agents/{created['id']}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {alice.token}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        await asyncio.sleep(0.5)  # subscribed, replayed; from now on it reads nothing
        # Large events: the socket buffers (several MB on loopback) must fill up first.
        filler = "x" * 65_000
        channel = execution_channel(created["id"])
        for number in range(QUEUE_SIZE + 200):
            message = {"event": "log", "id": 10**6 + number, "data": {"filler": filler}}
            await redis.publish(channel, json.dumps(message))
        # The server cut it off: what it had sent can still be read, then the stream ends.
        received = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 10):
            received += len(chunk)
        writer.close()
        assert received < (QUEUE_SIZE + 200) * 65_000 / 4  # far from everything was sent
        # Other clients are unaffected: a new stream works.
        got = await read_events(
            http, f"/api/agents/{created['id']}/events", alice.headers, stop_after=1
        )
        assert got[0]["data"]["status"] == "pending"


async def test_a_replay_racing_the_final_commit_still_finishes(
    alice, make_settings, sessions, test_redis_url, monkeypatch
):
    """The execution ends between the replay's read of the execution and of its logs: the
    terminal status arrives in the replay (its live copy is skipped), and the stream must still
    send ``finished`` and end."""
    from app.executions import repository
    from app.streams import sse

    settings = make_settings()
    async with running_hub(test_redis_url) as hub, api_client(settings) as http:
        created = await start(http, alice, "demo")
        read_logs = repository.list_logs
        cancelled = False

        async def cancel_then_read(*args: Any, **kwargs: Any) -> Any:
            nonlocal cancelled
            if not cancelled:
                cancelled = True
                url = f"/api/agents/{created['id']}/cancel"
                assert (await http.post(url, headers=alice.headers)).status_code == 202
            return await read_logs(*args, **kwargs)

        monkeypatch.setattr(repository, "list_logs", cancel_then_read)

        async def collect() -> bytes:
            stream = sse.execution_events(hub, sessions, uuid.UUID(created["id"]), 0)
            return b"".join([c if isinstance(c, bytes) else c.encode() async for c in stream])

        body = await asyncio.wait_for(collect(), 10)
    assert cancelled
    assert b'"status": "cancelled"' in body
    assert body.rstrip().endswith(b'data: {"status": "cancelled"}')
    assert hub.subscriber_count == 0


async def test_a_subscribe_cancelled_midway_leaves_nothing_behind(test_redis_url, redis):
    async with running_hub(test_redis_url) as hub:
        channel = execution_channel("cancelled-subscribe")
        subscribing = asyncio.create_task(hub.subscribe(channel))
        await asyncio.sleep(0)  # inside subscribe, before Redis confirmed it
        subscribing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await subscribing
        assert hub.subscriber_count == 0
        for _ in range(100):
            if await redis_subscribers(redis, channel) == 0:
                break
            await asyncio.sleep(0.01)
        assert await redis_subscribers(redis, channel) == 0
        # The channel works normally afterwards.
        again = await asyncio.wait_for(hub.subscribe(channel), 5)
        await redis.publish(channel, json.dumps({"event": "log", "id": 7, "data": {}}))
        received = await asyncio.wait_for(again.queue.get(), 5)
        assert received is not None
        assert received.id == 7


async def test_after_a_lost_connection_streams_end_and_new_ones_subscribe_afresh(
    test_redis_url, redis
):
    name = f"hub-{uuid.uuid4().hex[:8]}"
    async with running_hub(test_redis_url, client_name=name) as hub:
        channel = execution_channel("lost-connection")
        old = await hub.subscribe(channel)
        clients = await redis.client_list()
        (hub_client,) = [c for c in clients if c.get("name") == name and c.get("cmd") != "ping"]
        await redis.execute_command("CLIENT", "KILL", "ID", hub_client["id"])
        assert await asyncio.wait_for(old.queue.get(), 5) is None  # the stream ends; it resumes
        new = None
        for _ in range(50):  # the hub reconnects within a second or two
            try:
                new = await asyncio.wait_for(hub.subscribe(channel), 5)
                break
            except (ConnectionError, OSError, TimeoutError):
                await asyncio.sleep(0.2)
        assert new is not None
        await redis.publish(channel, json.dumps({"event": "log", "id": 9, "data": {}}))
        received = await asyncio.wait_for(new.queue.get(), 5)
        assert received is not None
        assert received.id == 9
        hub.release(old)  # late release of an ended stream does not touch the new one
        assert hub.subscriber_count == 1


def test_the_progress_stream_override_still_applies_to_sse_starlette():
    """ProgressStream replaces a private method of sse-starlette (the per-send timeout scope);
    if an upgrade renames it or stops calling it, the override would silently do nothing."""
    import inspect

    from sse_starlette.sse import EventSourceResponse

    from app.streams.router import ProgressStream

    assert "_send_with_timeout" in vars(EventSourceResponse)

    def parameters(method: object) -> list[str]:
        return list(inspect.signature(method).parameters)  # type: ignore[arg-type]

    assert parameters(EventSourceResponse._send_with_timeout) == parameters(
        ProgressStream._send_with_timeout
    )
    assert "self._send_with_timeout(" in inspect.getsource(EventSourceResponse._stream_response)


async def test_hostile_messages_on_a_channel_are_dropped_and_the_stream_goes_on(
    test_redis_url, redis
):
    async with running_hub(test_redis_url) as hub:
        channel = execution_channel("hostile")
        subscription = await hub.subscribe(channel)
        valid = {"event": "log", "id": 7, "data": {"n": 7}}
        for raw in (
            '{"event": "log", "id": Infinity, "data": {}}',
            "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser goes
            "[1, 2, 3]",
            '[{"event": "log", "id": 1, "data": [1]}]',
            '{"event": "log", "id": "1", "data": {}}',
            "[]",
            "not json",
            json.dumps([valid, {**valid, "id": 8}]),
        ):
            await redis.publish(channel, raw)
        received = [await asyncio.wait_for(subscription.queue.get(), 5) for _ in range(2)]
        assert [event.id for event in received if event is not None] == [7, 8]
        assert subscription.queue.empty()
        hub.release(subscription)
