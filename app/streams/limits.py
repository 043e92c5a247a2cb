"""Bounds on live connections: how many one user may hold open across every API process, how
long one may live, and a periodic check that the token behind it is still good.

Open connections are counted in Redis, one sorted set per user whose members are connections
and whose scores are their expiry: a process that dies leaves entries that lapse by themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.service import authenticate
from app.config import StreamLimits
from app.db import transaction
from app.errors import RateLimited

log = logging.getLogger(__name__)


class TooManyStreams(RateLimited):
    type = "too-many-streams"
    title = "Too many open streams"


def _key(user_id: int) -> str:
    return f"streams:user:{user_id}"


@dataclass
class Slot:
    """One open connection of one user, counted until released or lapsed."""

    redis: Redis
    user_id: int
    member: str
    ttl: float

    async def refresh(self) -> None:
        key = _key(self.user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {self.member: time.time() + self.ttl})
            pipe.expire(key, int(self.ttl) + 1)
            await pipe.execute()

    async def release(self) -> None:
        await self.redis.zrem(_key(self.user_id), self.member)


async def take_slot(redis: Redis, limits: StreamLimits, user_id: int) -> Slot | None:
    """A slot for a new connection, or None when the user holds ``max_per_user`` already."""
    ttl = limits.recheck_seconds * 3
    now = time.time()
    slot = Slot(redis, user_id, uuid.uuid4().hex, ttl)
    key = _key(user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {slot.member: now + ttl})
        pipe.zcard(key)
        pipe.expire(key, int(ttl) + 1)
        _, _, held, _ = await pipe.execute()
    if held > limits.max_per_user:
        await slot.release()
        return None
    return slot


def token_check(
    sessions: async_sessionmaker[AsyncSession], token: str, *, admin: bool
) -> Callable[[], Awaitable[bool]]:
    """Whether ``token`` still opens the connection: not revoked or expired, and (``admin``)
    its user still an admin."""

    async def still_allowed() -> bool:
        async with transaction(sessions) as session:
            user = await authenticate(session, token)
        return user is not None and (user.is_admin or not admin)

    return still_allowed


class Watch:
    """Ends a live connection (``end()``) when its lifetime is over or its token no longer
    opens it, and keeps its slot counted meanwhile; :meth:`stop` releases both."""

    def __init__(
        self,
        slot: Slot,
        still_allowed: Callable[[], Awaitable[bool]],
        limits: StreamLimits,
        end: Callable[[str], object],
    ) -> None:
        self.slot = slot
        self.still_allowed = still_allowed
        self.limits = limits
        self.end = end
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        deadline = time.monotonic() + self.limits.max_lifetime_seconds
        while True:
            remaining = deadline - time.monotonic()
            await asyncio.sleep(max(0.0, min(self.limits.recheck_seconds, remaining)))
            if time.monotonic() >= deadline:
                self.end("lifetime")
                return
            try:
                allowed = await self.still_allowed()
                await self.slot.refresh()
            except Exception:
                log.warning("could not re-check a live connection", exc_info=True)
                continue
            if not allowed:
                self.end("unauthorized")
                return

    def stop(self) -> None:
        self._task.cancel()
        release = asyncio.create_task(self.slot.release())
        _releasing.add(release)
        release.add_done_callback(_releasing.discard)


_releasing: set[asyncio.Task[None]] = set()
