"""The dashboard WebSocket: one connection, many subscriptions, each authorized.

Client messages: ``{"action": "subscribe" | "unsubscribe", "channel": ...}`` and
``{"action": "ping"}``. Channels: ``agent.<execution id>`` (owner or admin),
``user.<user id>.agents`` (that user or an admin) and ``admin.agents`` (admins). Server
messages: ``{"channel", "event", "id", "data"}`` for events, ``{"event": "subscribed" |
"unsubscribed" | "pong", ...}`` acknowledgements and ``{"event": "error", "error", "channel"?}``.
Close codes: 4401 without a valid token, 1008 with too many live streams open or when the token
is revoked (or an admin demoted), 1013 when the client cannot keep up, 4000 when the connection's
lifetime is over (reconnect and resume), 1000 otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.dependencies import bearer_token
from app.auth.models import User
from app.auth.service import authenticate
from app.config import StreamLimits
from app.db import transaction
from app.executions import events
from app.executions.service import is_visible
from app.streams.hub import Hub, Subscription
from app.streams.limits import Watch, take_slot, token_check

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1013
CLOSE_POLICY = 1008
CLOSE_LIFETIME = 4000
MAX_SUBSCRIPTIONS = 200


def token_of(websocket: WebSocket) -> str:
    """The bearer token, else ``?token=`` (a browser cannot set headers on a WebSocket)."""
    token = bearer_token(websocket.headers.get("authorization"))
    return token or websocket.query_params.get("token", "").strip()


async def may_subscribe(
    sessions: async_sessionmaker[AsyncSession], user: User, channel: str
) -> str | None:
    """None if ``user`` may follow ``channel``, else why not."""
    if channel == events.ADMIN_CHANNEL:
        return None if user.is_admin else "admin.agents is for admins"
    parts = channel.split(".")
    if len(parts) == 3 and parts[0] == "user" and parts[2] == "agents":
        if parts[1] == str(user.id) or user.is_admin:
            return None
        return "not your channel"
    if len(parts) == 2 and parts[0] == "agent":
        try:
            execution_id = uuid.UUID(parts[1])
        except ValueError:
            return "unknown channel"
        async with sessions() as session:
            visible = await is_visible(session, user, execution_id)
        return None if visible else "no such execution"
    return "unknown channel"


class Connection:
    """One dashboard socket and its subscriptions."""

    def __init__(
        self, websocket: WebSocket, hub: Hub, user: User, subscribes_per_minute: int
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.user = user
        self.relays: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}
        self.send_lock = asyncio.Lock()
        self.ended = asyncio.Event()
        self.end_reason = "too slow"
        self.subscribes_per_minute = subscribes_per_minute
        self.recent_subscribes: collections.deque[float] = collections.deque()

    def end(self, reason: str) -> None:
        """Close the connection (``too slow``, ``lifetime``, ``unauthorized``)."""
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    def may_subscribe_now(self) -> bool:
        """Whether another subscription fits in this minute's budget."""
        now = time.monotonic()
        while self.recent_subscribes and now - self.recent_subscribes[0] > 60:
            self.recent_subscribes.popleft()
        if len(self.recent_subscribes) >= self.subscribes_per_minute:
            return False
        self.recent_subscribes.append(now)
        return True

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.websocket.send_text(json.dumps(message, default=str))

    async def subscribe(self, channel: str) -> None:
        if channel in self.relays:
            await self.send({"event": "subscribed", "channel": channel})
            return
        if len(self.relays) >= MAX_SUBSCRIPTIONS:
            await self.send(
                {"event": "error", "error": "too many subscriptions", "channel": channel}
            )
            return
        subscription = await self.hub.subscribe(channel)
        subscription.on_overflow = lambda: self.end("too slow")
        self.relays[channel] = (subscription, asyncio.create_task(self._relay(subscription)))
        await self.send({"event": "subscribed", "channel": channel})

    async def unsubscribe(self, channel: str) -> None:
        relay = self.relays.pop(channel, None)
        if relay is not None:
            subscription, task = relay
            task.cancel()
            self.hub.release(subscription)
        await self.send({"event": "unsubscribed", "channel": channel})

    def close(self) -> None:
        for channel in list(self.relays):
            subscription, task = self.relays.pop(channel)
            task.cancel()
            self.hub.release(subscription)

    async def _relay(self, subscription: Subscription) -> None:
        while True:
            published = await subscription.queue.get()
            if published is None:
                self.end("too slow")
                return
            async with self.send_lock:
                await self.websocket.send_text(published.socket_text)


_CLOSES = {
    "too slow": (CLOSE_TOO_SLOW, "too slow: reconnect and resume"),
    "lifetime": (CLOSE_LIFETIME, "lifetime over: reconnect and resume"),
    "unauthorized": (CLOSE_POLICY, "the token was revoked or its rights changed"),
}


async def serve_dashboard_socket(
    websocket: WebSocket,
    hub: Hub,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    limits: StreamLimits,
) -> None:
    token = token_of(websocket)
    async with transaction(sessions) as session:
        user = await authenticate(session, token)
    # Accept first even to refuse: a browser can read a close code, not a handshake status.
    await websocket.accept()
    if user is None:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="a valid API token is required")
        return
    slot = await take_slot(redis, limits, user.id)
    if slot is None:
        await websocket.close(code=CLOSE_POLICY, reason="too many live streams open")
        return
    connection = Connection(websocket, hub, user, limits.subscribes_per_minute)
    watch = Watch(slot, token_check(sessions, token, admin=user.is_admin), limits, connection.end)
    receiving = asyncio.create_task(_receive(connection, sessions))
    ended = asyncio.create_task(connection.ended.wait())
    try:
        done, _ = await asyncio.wait({receiving, ended}, return_when=asyncio.FIRST_COMPLETED)
        if ended in done:
            code, reason = _CLOSES[connection.end_reason]
            # The close frame may not get through to a client that stopped reading; returning
            # closes the connection either way.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=code, reason=reason), 5)
    finally:
        watch.stop()
        receiving.cancel()
        ended.cancel()
        for _, relay in connection.relays.values():
            relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await receiving
        connection.close()


async def _receive(connection: Connection, sessions: async_sessionmaker[AsyncSession]) -> None:
    websocket = connection.websocket
    while True:
        try:
            raw = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        try:
            message = json.loads(raw)
            action = message["action"]
        except (ValueError, KeyError, TypeError):
            await connection.send({"event": "error", "error": 'expected {"action": ...}'})
            continue
        channel = message.get("channel")
        if action == "ping":
            await connection.send({"event": "pong"})
        elif action in ("subscribe", "unsubscribe") and isinstance(channel, str):
            if action == "unsubscribe":
                await connection.unsubscribe(channel)
                continue
            if not connection.may_subscribe_now():
                await connection.send(
                    {
                        "event": "error",
                        "error": "too many subscriptions a minute",
                        "channel": channel,
                    }
                )
                continue
            refused = await may_subscribe(sessions, connection.user, channel)
            if refused is not None:
                await connection.send({"event": "error", "error": refused, "channel": channel})
            else:
                await connection.subscribe(channel)
        else:
            await connection.send({"event": "error", "error": f"unknown action {action!r}"})
