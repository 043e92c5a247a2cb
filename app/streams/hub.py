"""One Redis pub/sub connection per API process, fanned out to every live stream.

A stream subscribes to a channel through the hub; the hub subscribes Redis to the channel for
the first local subscriber and unsubscribes after the last. ``subscribe`` returns only once
Redis confirmed the subscription, so a stream can then replay from the database knowing that
nothing committed afterwards can be missed. Each subscriber has a bounded queue: a client too
slow to keep up is cut off (``overflowed``), never buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sse_starlette.event import ServerSentEvent

from app.executions.events import decode_message

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
_IDLE_CHANNEL = "hub.idle"  # keeps the connection in subscribe mode while nobody listens


@dataclass(frozen=True, slots=True)
class Published:
    """One event from a channel, decoded and encoded once for all of its subscribers."""

    id: int
    event: str
    data: dict[str, Any]
    data_json: str
    """``data`` as JSON (the SSE data line)."""
    socket_text: str
    """The whole WebSocket message: ``{"channel", "event", "id", "data"}``."""
    sse_frame: bytes
    """The whole SSE frame (id, event, data lines)."""

    @classmethod
    def decode_all(cls, channel: str, raw: bytes) -> list[Published]:
        """The events of one message, in order (:func:`~app.executions.events.decode_message`)."""
        return [cls.decode(channel, item) for item in decode_message(raw)]

    @classmethod
    def decode(cls, channel: str, message: dict[str, Any]) -> Published:
        if not isinstance(message.get("data"), dict) or not isinstance(message.get("id"), int):
            raise ValueError("an event needs an integer id and an object as data")
        data_json = json.dumps(message["data"])
        socket_text = (
            f'{{"channel": {json.dumps(channel)}, "event": {json.dumps(message["event"])}, '
            f'"id": {int(message["id"])}, "data": {data_json}}}'
        )
        event_id = int(message["id"])
        sse_frame = ServerSentEvent(data=data_json, event=message["event"], id=str(event_id))
        return cls(
            event_id, message["event"], message["data"], data_json, socket_text,
            sse_frame.encode(),
        )  # fmt: skip


class Subscription:
    def __init__(self, channel: str, size: int) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[Published | None] = asyncio.Queue(maxsize=size)
        self.overflowed = False
        self.on_overflow: Callable[[], object] | None = None
        """Called once when the queue overflows: a reader stuck in a blocked send will never
        see the end marker, so its connection must be cut from outside."""

    def deliver(self, data: Published) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            # Too slow a reader: mark it and wake it so it ends its stream.
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            if self.on_overflow is not None:
                self.on_overflow()


class Hub:
    def __init__(
        self, redis_url: str, queue_size: int = QUEUE_SIZE, client_name: str = "agents-hub"
    ) -> None:
        self._redis = Redis.from_url(redis_url, client_name=client_name)
        self._queue_size = queue_size
        self._pubsub: PubSub | None = None
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._unsubscribing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(_IDLE_CHANNEL)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._closed = True
        for task in list(self._unsubscribing):
            task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.overflowed = True
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.put_nowait(None)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def subscribe(self, channel: str) -> Subscription:
        assert self._pubsub is not None, "the hub is not started"
        subscription = Subscription(channel, self._queue_size)
        try:
            async with self._lock:
                first = not self._subscribers[channel]
                self._subscribers[channel].add(subscription)
                if first:
                    confirmed = asyncio.get_running_loop().create_future()
                    self._confirmed[channel] = confirmed
                    await self._pubsub.subscribe(channel)
                else:
                    confirmed = self._confirmed[channel]
            await asyncio.wait_for(asyncio.shield(confirmed), 10)
        except BaseException:  # cancelled or timed out: the caller never gets to release it
            self.release(subscription)
            raise
        return subscription

    def release(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``. Synchronous, so a thousand streams ending at once
        cost no task or lock each; Redis is unsubscribed in the background after the channel's
        last local subscriber leaves."""
        subscribers = self._subscribers.get(subscription.channel)
        if not subscribers or subscription not in subscribers:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscribers[subscription.channel]
            self._unsubscribe_later(subscription.channel)

    def _unsubscribe_later(self, channel: str) -> None:
        if self._closed:
            return
        task = asyncio.create_task(self._unsubscribe_unused(channel))
        self._unsubscribing.add(task)
        task.add_done_callback(self._unsubscribing.discard)

    async def _unsubscribe_unused(self, channel: str) -> None:
        assert self._pubsub is not None
        async with self._lock:
            if self._subscribers.get(channel):
                return  # a new subscriber arrived meanwhile: keep the Redis subscription
            self._subscribers.pop(channel, None)
            self._confirmed.pop(channel, None)
            try:
                await self._pubsub.unsubscribe(channel)
            except Exception:
                log.warning("could not unsubscribe from %s", channel, exc_info=True)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("pub/sub connection failed; streams end", exc_info=True)
                self._fail_all()
                await asyncio.sleep(1.0)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if message["type"] == "subscribe":
            confirmed = self._confirmed.get(name)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            subscribers = list(self._subscribers.get(name, ()))
            if not subscribers:
                return
            try:
                published = Published.decode_all(name, message["data"])
            except Exception:  # anything a buggy or hostile publisher sends (deep nesting too)
                log.warning("dropping a malformed message on %s", name)
                return
            for event in published:
                for subscription in subscribers:
                    subscription.deliver(event)

    def _fail_all(self) -> None:
        """Streams cannot trust their feed after a connection loss: end them (clients resume)
        and forget their channels, so that a new stream subscribes afresh and waits for Redis to
        confirm it instead of trusting the old confirmation."""
        for channel, subscribers in list(self._subscribers.items()):
            for subscription in subscribers:
                subscription.overflowed = True
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.put_nowait(None)
            del self._subscribers[channel]
            confirmed = self._confirmed.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_exception(ConnectionError("the pub/sub connection was lost"))
            self._unsubscribe_later(channel)
