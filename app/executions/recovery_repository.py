"""The sweep's statements (executions whose worker or job was lost) and the start of
scheduled executions (by their timer job, or the sweep when that job was lost)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Float, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from app.executions.transitions import (
    ABANDON,
    START_ON_TIME,
    StatusChange,
    StatusLog,
    change_status,
)

_STALE_RUNNING = text(
    """
    SELECT id, lease, queue, recovery_count FROM agent_executions
    WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => :stale_after)
    ORDER BY heartbeat_at LIMIT :batch
    """
).bindparams(bindparam("stale_after", type_=Float), bindparam("batch", type_=Integer))

# The heartbeat is reset so the recovery job has ``stale_after`` to start before the next sweep
# looks again; ``recovery_count`` must be what this sweep read, so a concurrent sweep loses.
_MARK_RECOVERY = text(
    """
    UPDATE agent_executions
    SET recovery_count = recovery_count + 1, heartbeat_at = now(), updated_at = now()
    WHERE id = :id AND lease = :lease AND status = 'running' AND recovery_count = :seen
    RETURNING recovery_count
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("seen", type_=Integer),
)

_ABANDON = text(
    change_status(
        [ABANDON],
        where="e.id = :id AND e.lease = :lease AND e.recovery_count = :seen",
        sets="""error = '{"type": "worker_lost",
                          "message": "the workers running it stopped responding"}'::jsonb""",
        log=StatusLog(message="'Failed: worker lost'"),
    )
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("seen", type_=Integer),
)

_START_ON_TIME = text(
    change_status([START_ON_TIME], where="e.id = :id AND e.run_at <= now()")
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_DUE_SCHEDULED = text(
    """
    SELECT id FROM agent_executions
    WHERE status = 'scheduled' AND run_at <= now()
    ORDER BY run_at LIMIT :batch
    """
).bindparams(bindparam("batch", type_=Integer))

_STALE_PENDING = text(
    """
    SELECT id, lease, queue, recovery_count FROM agent_executions
    WHERE status = 'pending' AND updated_at < now() - make_interval(secs => :stale_after)
    ORDER BY updated_at LIMIT :batch
    """
).bindparams(bindparam("stale_after", type_=Float), bindparam("batch", type_=Integer))

_TOUCH_PENDING = text(
    """
    UPDATE agent_executions SET updated_at = now()
    WHERE id = :id AND lease = :lease AND status = 'pending'
      AND updated_at < now() - make_interval(secs => :stale_after)
    RETURNING id
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("stale_after", type_=Float),
)


@dataclass(frozen=True, slots=True)
class Stale:
    """An execution the sweep found: its job may be lost."""

    id: uuid.UUID
    lease: int
    queue: str
    recovery_count: int


async def stale_running(conn: AsyncConnection, stale_after: float, batch: int) -> list[Stale]:
    """Running executions whose heartbeat is older than ``stale_after`` seconds."""
    rows = await conn.execute(_STALE_RUNNING, {"stale_after": stale_after, "batch": batch})
    return [Stale(r.id, r.lease, r.queue, r.recovery_count) for r in rows]


async def stale_pending(conn: AsyncConnection, stale_after: float, batch: int) -> list[Stale]:
    """Pending executions that have waited longer than ``stale_after`` seconds."""
    rows = await conn.execute(_STALE_PENDING, {"stale_after": stale_after, "batch": batch})
    return [Stale(r.id, r.lease, r.queue, r.recovery_count) for r in rows]


async def mark_recovery(conn: AsyncConnection, stale: Stale) -> int | None:
    """Count one more recovery; the attempt's number, or None if the execution moved on."""
    keys = {"id": stale.id, "lease": stale.lease, "seen": stale.recovery_count}
    attempt: int | None = (await conn.execute(_MARK_RECOVERY, keys)).scalar()
    return attempt


async def abandon(conn: AsyncConnection, stale: Stale) -> StatusChange | None:
    """Fail an execution whose workers kept dying; None if it moved on."""
    keys = {"id": stale.id, "lease": stale.lease, "seen": stale.recovery_count}
    row = (await conn.execute(_ABANDON, keys)).first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def touch_pending(conn: AsyncConnection, stale: Stale, stale_after: float) -> bool:
    """Claim the requeue of a pending execution; False if it moved on or another sweep did."""
    keys = {"id": stale.id, "lease": stale.lease, "stale_after": stale_after}
    return (await conn.execute(_TOUCH_PENDING, keys)).scalar() is not None


async def start_on_time(conn: AsyncConnection, execution_id: uuid.UUID) -> StatusChange | None:
    """Start a scheduled execution whose time has come; None if it has not, or it is no longer
    scheduled (paused, cancelled, or started already)."""
    row = (await conn.execute(_START_ON_TIME, {"id": execution_id})).first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def due_scheduled(conn: AsyncConnection, batch: int) -> list[uuid.UUID]:
    """Scheduled executions whose time has come (their timer job was lost or is late)."""
    return [row.id for row in await conn.execute(_DUE_SCHEDULED, {"batch": batch})]
