"""The sweep that makes Redis losses and dead workers delay work, never lose it.

- ``running`` executions whose heartbeat is stale and for which no job is queued get a recovery
  job under their current lease (they resume from their last committed step), at most
  ``max_recoveries`` times; after that they fail with ``worker_lost``.
- ``pending`` executions that have waited longer than ``stale_after`` with no job queued get
  their job again.

Sweeps may run in several worker processes at once: every change is conditional on what the
sweep read, so only one of them acts on an execution.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from sqlalchemy import Float, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.executions import events
from app.executions.children import wake_waiting_parents
from app.executions.jobs import enqueue_chunk, job_id
from app.executions.status import Status

log = logging.getLogger(__name__)

_BATCH = 500

_STALE_RUNNING = text(
    """
    SELECT id, user_id, lease, queue, recovery_count FROM agent_executions
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

_FAIL_LOST = text(
    """
    WITH execution AS (
        UPDATE agent_executions
        SET status = 'failed', completed_at = now(), updated_at = now(), worker_id = NULL,
            error = '{"type": "worker_lost",
                      "message": "the workers running it stopped responding"}'::jsonb
        WHERE id = :id AND lease = :lease AND status = 'running' AND recovery_count = :seen
        RETURNING id, step_count, token_usage, completed_at
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'error', 'status_changed', 'Failed: worker lost',
               jsonb_build_object('from', 'running', 'to', 'failed',
                                  'step_count', step_count, 'token_usage', token_usage)
        FROM execution
        RETURNING id
    )
    SELECT status_log.id AS log_id, execution.* FROM execution, status_log
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("seen", type_=Integer),
)

_STALE_PENDING = text(
    """
    SELECT id, lease, queue FROM agent_executions
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


@dataclass
class SweepReport:
    recovered: int = 0
    failed: int = 0
    requeued: int = 0
    woken: int = 0


def _recovery_job(attempt: int) -> str:
    return f":recovery{attempt}"


async def _is_queued(redis: ArqRedis, *job_ids: str) -> bool:
    """Whether arq holds any of these jobs (queued or running; not merely a kept result)."""
    return bool(await redis.exists(*(job_key_prefix + job for job in job_ids)))


async def sweep(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> SweepReport:
    report = SweepReport()
    tuning = settings.worker
    params = {"stale_after": tuning.stale_after, "batch": _BATCH}
    async with db.connect() as conn:
        running = (await conn.execute(_STALE_RUNNING, params)).all()
        pending = (await conn.execute(_STALE_PENDING, params)).all()
    for row in running:
        base = job_id(row.id, row.lease)
        if await _is_queued(redis, base, base + _recovery_job(row.recovery_count)):
            continue  # its job is waiting for a free worker
        keys = {"id": row.id, "lease": row.lease, "seen": row.recovery_count}
        if row.recovery_count >= tuning.max_recoveries:
            await _fail_lost(db, redis, keys, row.user_id, report)
            continue
        async with db.begin() as conn:
            attempt = (await conn.execute(_MARK_RECOVERY, keys)).scalar()
        if attempt is None:
            continue  # another sweep, or the execution itself, moved on
        await enqueue_chunk(redis, row.id, row.lease, row.queue, suffix=_recovery_job(attempt))
        report.recovered += 1
        log.warning("recovering execution %s (attempt %s)", row.id, attempt)
    report.woken = await wake_waiting_parents(db, redis, settings)
    for row in pending:
        if await _is_queued(redis, job_id(row.id, row.lease)):
            continue
        async with db.begin() as conn:
            touched = (
                await conn.execute(
                    _TOUCH_PENDING,
                    {"id": row.id, "lease": row.lease, "stale_after": tuning.stale_after},
                )
            ).scalar()
        if touched is None:
            continue
        # A fresh job id: the first job's id may be blocked by arq's kept result of a failure.
        suffix = f":requeue{int(time.time())}"
        if await enqueue_chunk(redis, uuid.UUID(str(row.id)), row.lease, row.queue, suffix=suffix):
            report.requeued += 1
    return report


async def _fail_lost(
    db: AsyncEngine, redis: ArqRedis, keys: dict[str, object], user_id: int, report: SweepReport
) -> None:
    async with db.begin() as conn:
        row = (await conn.execute(_FAIL_LOST, keys)).first()
    if row is None:
        return
    report.failed += 1
    log.error("execution %s failed: its workers stopped responding", row.id)
    event = events.status_changed(
        row.id, row.log_id, Status.FAILED, step_count=row.step_count,
        token_usage=row.token_usage, completed_at=row.completed_at,
    )  # fmt: skip
    try:
        await events.publish(redis, row.id, user_id, [event])
    except Exception:
        log.warning("could not publish the failure of %s", row.id, exc_info=True)
