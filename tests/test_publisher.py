"""The publisher: many steps' events in one round trip, in order, none lost to a cancelled step."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.executions.publisher import Publisher, publisher_for


class CountingRedis(Redis):
    """A real client that counts the pipelines it opens (one per round trip here)."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest.fixture
async def counting(test_redis_url: str, clean_state: None) -> AsyncIterator[CountingRedis]:
    client = CountingRedis.from_url(test_redis_url)
    yield client
    await client.aclose()


async def listening(client: Redis, channel: str, count: int) -> asyncio.Task[list[bytes]]:
    """Subscribed to ``channel`` once this returns; the task ends with ``count`` messages (or
    what came within 10 s)."""
    pubsub: Any = client.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscription's confirmation

    async def receive() -> list[bytes]:
        received: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 10
        try:
            while len(received) < count and asyncio.get_running_loop().time() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    received.append(message["data"])
        finally:
            await pubsub.aclose()
        return received

    return asyncio.create_task(receive())


async def test_concurrent_steps_share_round_trips_and_every_message_arrives_in_order(
    counting: CountingRedis, redis: Any
) -> None:
    listener = await listening(redis, "ch", 300)
    publisher = publisher_for(counting)

    async def step(number: int) -> None:
        for turn in range(3):
            await publisher.send(counting, [("ch", f"{number}:{turn}".encode())])

    await asyncio.gather(*(step(number) for number in range(100)))
    received = [item.decode() for item in await listener]

    assert len(received) == 300
    for number in range(100):  # each step's own messages in the order it sent them
        mine = [item for item in received if item.startswith(f"{number}:")]
        assert mine == [f"{number}:0", f"{number}:1", f"{number}:2"]
    assert counting.pipelines <= 10  # not 300


async def test_a_cancelled_step_does_not_take_the_others_messages_with_it(
    counting: CountingRedis, redis: Any
) -> None:
    listener = await listening(redis, "ch", 3)
    publisher = publisher_for(counting)
    sends = [
        asyncio.create_task(publisher.send(counting, [("ch", str(n).encode())])) for n in range(3)
    ]
    await asyncio.sleep(0)  # all three queued
    sends[1].cancel()

    results = await asyncio.gather(*sends, return_exceptions=True)

    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0] is None
    assert results[2] is None
    assert sorted(await listener) == [b"0", b"1", b"2"]  # the cancelled one's went too


async def test_a_failed_round_trip_raises_to_its_callers_and_the_next_one_starts_afresh(
    counting: CountingRedis,
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    publisher = publisher_for(down)

    results = await asyncio.gather(
        *(publisher.send(down, [("ch", b"x")]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, RedisConnectionError) for result in results)
    await down.aclose()

    await publisher_for(counting).send(counting, [("ch", b"after")])  # another client: fine
    assert counting.pipelines == 1


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that takes connections and commands and never answers: a hung Redis."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_redis_that_never_answers_fails_each_round_trip_in_time() -> None:
    async with silent_server() as port:
        hung = Redis(host="127.0.0.1", port=port)
        publisher = Publisher(timeout=0.3)
        first = asyncio.create_task(publisher.send(hung, [("ch", b"first")]))
        await asyncio.sleep(0.05)  # on its way; the rest queue behind it
        later = [publisher.send(hung, [("ch", str(n).encode())]) for n in range(50)]

        async with asyncio.timeout(5):  # not stuck behind the first for ever
            results = await asyncio.gather(first, *later, return_exceptions=True)

        assert all(isinstance(result, TimeoutError) for result in results)
        await hung.aclose()


async def test_a_client_whose_round_trip_was_cancelled_is_not_kept_alive() -> None:
    async with silent_server() as port:
        hung = Redis(host="127.0.0.1", port=port)
        publisher = publisher_for(hung)
        waiting = asyncio.create_task(publisher.send(hung, [("ch", b"x")]))
        await asyncio.sleep(0.05)
        assert publisher._sender is not None
        publisher._sender.cancel()  # as when the worker's loop shuts down mid round trip
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)  # the sender's done callback
        alive = weakref.ref(hung)
        await hung.aclose()
        del hung, waiting
        gc.collect()
        assert alive() is None
