"""Delivering events to the executions that wait for them, and ending waits that time out.

An event wakes every execution of its user that waits for its type (and its key, when the
waiter named one; a paused waiter holds the event until it is resumed), each exactly once: the
move is one conditional UPDATE, so of two racing deliveries only one wakes a given waiter. An
event nobody waits for is kept in ``agent_events``; a wait that starts within
``events.buffer_seconds`` takes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.events import repository
from app.events.schemas import EventDelivery
from app.executions.effects import after_commit_effects, announce_committed
from app.executions.transitions import Status


@dataclass(frozen=True, slots=True)
class Delivered:
    """What an event did: the executions it woke, or the id it was kept under."""

    execution_ids: list[uuid.UUID]
    kept_as: int | None


def delivery_response(delivered: Delivered) -> EventDelivery:
    """What the API (and an ``event`` webhook) answers about a delivery."""
    return EventDelivery(
        triggered_count=len(delivered.execution_ids),
        execution_ids=delivered.execution_ids,
        kept_event_id=delivered.kept_as,
    )


async def deliver_event(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    *,
    user_id: int,
    event_type: str,
    key: str | None,
    payload: Any,
) -> Delivered:
    """Wake ``user_id``'s executions waiting for this event (their jobs are queued after
    commit); keep the event if none waits."""
    await repository.lock_events(session, user_id, event_type)
    woken = await repository.wake_waiters(
        session, user_id=user_id, event_type=event_type, key=key, payload=payload
    )
    if not woken:
        kept = await repository.store_event(
            session, user_id=user_id, event_type=event_type, key=key, payload=payload
        )
        return Delivered([], kept)
    effects = after_commit_effects(session, redis, settings)
    for change in woken:
        if change.status is Status.PENDING:  # a paused one holds the event until resumed
            effects.announce(change)
    return Delivered([change.execution_id for change in woken], None)


async def expire_wait(
    db: AsyncEngine, redis: ArqRedis, settings: Settings, execution_id: uuid.UUID
) -> bool:
    """End the execution's wait if its deadline has passed: it resumes, and its agent learns
    that the wait timed out. False when it is not due, or no longer waits."""
    async with db.begin() as conn:
        change = await repository.expire_wait(conn, execution_id)
    return await announce_committed(db, redis, settings, change)


async def expire_due_waits(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> int:
    """For the sweep: end every wait whose deadline passed (its timer job was lost)."""
    async with db.connect() as conn:
        due = await repository.expired_waits(conn)
    return sum([await expire_wait(db, redis, settings, execution_id) for execution_id in due])
