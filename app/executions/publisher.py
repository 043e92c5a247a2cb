"""One Redis round trip for the events of many steps: how a busy worker publishes.

A worker with hundreds of executions in flight commits a step every few milliseconds, and
each step publishes to two or three channels. Sent one step at a time, that is a pipeline,
a connection checkout (with its health check) and a write and a read per step. The publisher
sends whatever steps have queued while the previous round trip was on its way in the next
one: alone, a step's events go at once; under load, one round trip carries many steps'.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence

from redis.asyncio import Redis

# Messages in one pipeline at most (a step sends two or three, each a few kilobytes).
MAX_BATCH = 512
# How long a round trip may take: a Redis that stopped answering fails the steps waiting on
# it (their events are in agent_logs; streams replay them) instead of holding every later one.
ROUND_TRIP_TIMEOUT = 10.0


class Publisher:
    """Publishes ``(channel, message)`` pairs in batches, in the order they were given.

    It keeps no reference to its client between batches, so the client's entry in
    :func:`publisher_for` goes when the client does."""

    def __init__(self, timeout: float = ROUND_TRIP_TIMEOUT) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self._queued: list[tuple[str, bytes]] = []
        self._batch_sent: asyncio.Future[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    async def send(self, redis: Redis, messages: Sequence[tuple[str, bytes]]) -> None:
        """Queue ``messages``; return once the round trip carrying them is done, or raise its
        error. A caller that is cancelled meanwhile leaves them queued: others wait too."""
        if not messages:
            return
        self._queued.extend(messages)
        if self._batch_sent is None:
            self._batch_sent = self.loop.create_future()
            self._batch_sent.add_done_callback(_retrieve)
        sent = self._batch_sent
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued(redis))
            self._sender.add_done_callback(self._sender_done)
        await asyncio.shield(sent)

    async def _send_queued(self, redis: Redis) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            sent, self._batch_sent = self._batch_sent, None
            assert sent is not None
            try:
                for start in range(0, len(batch), MAX_BATCH):
                    async with (
                        asyncio.timeout(self.timeout),
                        redis.pipeline(transaction=False) as pipe,
                    ):
                        for channel, message in batch[start : start + MAX_BATCH]:
                            pipe.publish(channel, message)
                        await pipe.execute()
            except Exception as exc:
                sent.set_exception(exc)
            except BaseException:  # cancelled (the loop is closing): nothing more goes out
                sent.cancel()
                self._drop_queued()
                raise
            else:
                sent.set_result(None)

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        # Dropping the finished task also drops its traceback, which holds the client.
        if self._sender is sender:
            self._sender = None
            if self._queued:  # it was cancelled before it sent them: fail their callers
                self._drop_queued()

    def _drop_queued(self) -> None:
        self._queued = []
        if self._batch_sent is not None:
            self._batch_sent.cancel()
            self._batch_sent = None


_publishers: weakref.WeakKeyDictionary[Redis, Publisher] = weakref.WeakKeyDictionary()


def publisher_for(redis: Redis) -> Publisher:
    """The publisher of a Redis client (made on first use, gone with the client): all the
    steps a process runs on one client share its round trips."""
    publisher = _publishers.get(redis)
    if publisher is None or publisher.loop is not asyncio.get_running_loop():
        publisher = _publishers[redis] = Publisher()
    return publisher


def _retrieve(sent: asyncio.Future[None]) -> None:
    """Mark a batch's error as seen even when every caller waiting for it was cancelled."""
    if not sent.cancelled():
        sent.exception()
