"""Statements behind events: waking the executions that wait for one, keeping one nobody
awaited, consuming a kept one when a wait starts, and ending waits whose deadline passed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BigInteger, Float, String, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.executions.transitions import (
    EVENT_ARRIVED,
    EVENT_HELD,
    WAIT_TIMED_OUT,
    Signal,
    StatusChange,
    change_status,
)

# Keeps these locks' keys apart from any other advisory lock the database may see.
_LOCK_NAMESPACE = 0x65766E74
_LOCK = text(
    "SELECT pg_advisory_xact_lock(:namespace, "
    "hashtext(CAST(:user_id AS text) || ':' || :event_type))"
).bindparams(bindparam("user_id", type_=BigInteger), bindparam("event_type", type_=String))

# A waiter with a key takes only events with that key; a waiter without one takes any.
_MATCHES = "(e.wait ->> 'key' IS NULL OR e.wait ->> 'key' = {key})"


# A paused waiter takes the event too: it stays paused with the event held for its agent, and
# resuming sends it on (its wait is over).
_ARRIVALS = [EVENT_ARRIVED, EVENT_HELD]
_CHOOSE_ARRIVAL = (
    f"CASE WHEN e.status = 'paused' THEN '{EVENT_HELD.name}' ELSE '{EVENT_ARRIVED.name}' END"
)


def _arrival(
    *, where: str, payload: str, key: str, before: tuple[str, ...] = (), after: tuple[str, ...] = ()
) -> str:
    """The statement that hands an event (``payload``, ``key``: SQL) to the waiters ``where``
    selects: each moves to pending, keeps the payload in ``metadata.event_payload`` and gets a
    delivery for its agent."""
    return change_status(
        _ARRIVALS,
        choose=_CHOOSE_ARRIVAL,
        where=f"{where} AND e.status IN ('awaiting_event', 'paused')",
        sets="wait = NULL, "
        f"metadata = e.metadata || jsonb_build_object('event_payload', {payload})",
        before=before,
        after=(
            *after,
            f"""delivery AS (
                INSERT INTO agent_signals (execution_id, signal_type, payload)
                SELECT id, '{Signal.EVENT}',
                       jsonb_build_object('event_type', CAST(:event_type AS varchar),
                                          'key', {key}, 'payload', {payload})
                FROM changed
            )""",
        ),
    )


_WAKE_WAITERS = text(
    _arrival(
        where="e.user_id = :user_id AND e.wait ->> 'event' = :event_type AND "
        + _MATCHES.format(key="CAST(:key AS varchar)"),
        payload="CAST(:payload AS jsonb)",
        key="CAST(:key AS varchar)",
    )
).bindparams(
    bindparam("user_id", type_=BigInteger),
    bindparam("event_type", type_=String),
    bindparam("key", type_=String),
    bindparam("payload", type_=JSONB),
)

_STORE = text(
    """
    INSERT INTO agent_events (user_id, event_type, key, payload)
    VALUES (:user_id, :event_type, :key, :payload)
    RETURNING id
    """
).bindparams(
    bindparam("user_id", type_=BigInteger),
    bindparam("key", type_=String),
    bindparam("payload", type_=JSONB),  # None is stored as JSON null
)

# The oldest kept event a wait that just started may take: same user and type, its key if the
# waiter named one, received at most ``buffer`` seconds ago, not taken yet.
_TAKE_KEPT = text(
    _arrival(
        where="e.id = :execution_id AND e.wait ->> 'event' = :event_type "
        "AND EXISTS (SELECT 1 FROM kept)",
        payload="(SELECT payload FROM kept)",
        key="(SELECT key FROM kept)",
        before=(
            """kept AS (
                SELECT ev.id, ev.key, ev.payload FROM agent_events ev, agent_executions w
                WHERE w.id = :execution_id AND ev.user_id = w.user_id
                  AND ev.event_type = :event_type AND ev.consumed_at IS NULL
                  AND ev.received_at > now() - make_interval(secs => :buffer)
                  AND (w.wait ->> 'key' IS NULL OR ev.key = w.wait ->> 'key')
                ORDER BY ev.received_at, ev.id LIMIT 1
                FOR UPDATE OF ev
            )""",
        ),
        after=(
            """taken AS (
                UPDATE agent_events SET consumed_by = :execution_id, consumed_at = now()
                WHERE id IN (SELECT id FROM kept) AND EXISTS (SELECT 1 FROM changed)
            )""",
        ),
    )
).bindparams(
    bindparam("execution_id", type_=UUID(as_uuid=True)),
    bindparam("event_type", type_=String),
    bindparam("buffer", type_=Float),
)

# The wait as it was (the UPDATE returns the row without it) tells the agent what timed out.
_EXPIRE = text(
    change_status(
        [WAIT_TIMED_OUT],
        where="e.id = :id AND e.wait ? 'deadline' "
        "AND (e.wait ->> 'deadline')::timestamptz <= now()",
        sets="wait = NULL",
        before=["waited AS (SELECT id, wait FROM agent_executions WHERE id = :id)"],
        after=[
            f"""delivery AS (
                INSERT INTO agent_signals (execution_id, signal_type, payload)
                SELECT changed.id, '{Signal.EVENT_TIMEOUT}',
                       jsonb_build_object('event_type', waited.wait ->> 'event',
                                          'key', waited.wait ->> 'key')
                FROM changed JOIN waited ON waited.id = changed.id
            )"""
        ],
    )
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_PRUNE = text(
    "DELETE FROM agent_events WHERE received_at < now() - make_interval(secs => :keep)"
).bindparams(bindparam("keep", type_=Float))

_EXPIRED = text(
    """
    SELECT id FROM agent_executions
    WHERE status = 'awaiting_event' AND wait ? 'deadline'
      AND (wait ->> 'deadline')::timestamptz <= now()
    LIMIT 500
    """
)


async def lock_events(
    session: AsyncSession | AsyncConnection, user_id: int, event_type: str
) -> None:
    """Serialise deliveries of and waits for ``event_type`` of one user until the transaction
    ends, so an event and a wait starting at the same moment cannot miss each other."""
    await session.execute(
        _LOCK, {"namespace": _LOCK_NAMESPACE, "user_id": user_id, "event_type": event_type}
    )


async def wake_waiters(
    session: AsyncSession, *, user_id: int, event_type: str, key: str | None, payload: Any
) -> list[StatusChange]:
    """Every execution of ``user_id`` waiting for this event, now pending with it."""
    rows = await session.execute(
        _WAKE_WAITERS,
        {"user_id": user_id, "event_type": event_type, "key": key, "payload": payload},
    )
    return [StatusChange.from_row(row._mapping) for row in rows]


async def store_event(
    session: AsyncSession, *, user_id: int, event_type: str, key: str | None, payload: Any
) -> int:
    """Keep an event nobody waited for; returns its id."""
    event_id = await session.scalar(
        _STORE, {"user_id": user_id, "event_type": event_type, "key": key, "payload": payload}
    )
    assert event_id is not None
    return int(event_id)


async def take_kept_event(
    conn: AsyncConnection, execution_id: uuid.UUID, event_type: str, buffer_seconds: float
) -> StatusChange | None:
    """Hand the waiting execution the oldest matching event kept in the last
    ``buffer_seconds``; None if there is none (or it no longer waits)."""
    row = (
        await conn.execute(
            _TAKE_KEPT,
            {"execution_id": execution_id, "event_type": event_type, "buffer": buffer_seconds},
        )
    ).first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def expire_wait(conn: AsyncConnection, execution_id: uuid.UUID) -> StatusChange | None:
    """End the wait if its deadline has passed; None if it has not, or it no longer waits."""
    row = (await conn.execute(_EXPIRE, {"id": execution_id})).first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def expired_waits(conn: AsyncConnection) -> list[uuid.UUID]:
    """Executions whose wait's deadline has passed (their timer job was lost)."""
    return [row.id for row in (await conn.execute(_EXPIRED)).all()]


async def prune_events(conn: AsyncConnection, keep_seconds: float) -> None:
    """Forget events received more than ``keep_seconds`` ago."""
    await conn.execute(_PRUNE, {"keep": keep_seconds})
