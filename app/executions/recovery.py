"""The sweep that makes Redis losses and dead workers delay work, never lose it.

- ``running`` executions whose heartbeat is stale and whose next job is not queued get a
  recovery job under their current lease (from their last committed step), at most
  ``max_recoveries`` times; after that they fail with ``worker_lost``.
- ``pending`` executions older than ``stale_after`` get their first job again (same job id, so a
  job still in the queue is not duplicated).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from sqlalchemy import Float, Integer, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.executions.jobs import enqueue_chunk, job_id

log = logging.getLogger(__name__)

_STALE_RUNNING = text(
    """
    SELECT id, lease, queue, recovery_count FROM agent_executions
    WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => :stale_after)
    ORDER BY heartbeat_at LIMIT 500
    """
).bindparams(bindparam("stale_after", type_=Float))

_MARK_RECOVERY = text(
    """
    UPDATE agent_executions SET recovery_count = recovery_count + 1, updated_at = now()
    WHERE id = :id AND lease = :lease AND status = 'running' AND recovery_count < :max
    RETURNING recovery_count
    """
).bindparams(bindparam("lease", type_=Integer), bindparam("max", type_=Integer))

_FAIL_LOST = text(
    """
    WITH execution AS (
        UPDATE agent_executions
        SET status = 'failed', completed_at = now(), updated_at = now(), worker_id = NULL,
            error = '{"type": "worker_lost", "message": "the worker running it stopped responding"}'
        WHERE id = :id AND lease = :lease AND status = 'running'
        RETURNING id
    )
    INSERT INTO agent_logs (execution_id, level, event_type, message, context)
    SELECT id, 'error', 'status_changed', 'Failed: worker lost',
           '{"from": "running", "to": "failed"}'::jsonb FROM execution
    """
).bindparams(bindparam("lease", type_=Integer))

_STALE_PENDING = text(
    """
    SELECT id, lease, queue FROM agent_executions
    WHERE status = 'pending' AND updated_at < now() - make_interval(secs => :stale_after)
    ORDER BY updated_at LIMIT 500
    """
).bindparams(bindparam("stale_after", type_=Float))


@dataclass
class SweepReport:
    recovered: int = 0
    failed: int = 0
    requeued: int = 0


async def sweep(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> SweepReport:
    report = SweepReport()
    tuning = settings.worker
    async with db.connect() as conn:
        running = (await conn.execute(_STALE_RUNNING, {"stale_after": tuning.stale_after})).all()
        pending = (await conn.execute(_STALE_PENDING, {"stale_after": tuning.stale_after})).all()
    for row in running:
        if await redis.exists(job_key_prefix + job_id(row.id, row.lease)):
            continue  # its next chunk is queued, just waiting for a free worker
        params = {"id": row.id, "lease": row.lease, "max": tuning.max_recoveries}
        async with db.begin() as conn:
            marked = (await conn.execute(_MARK_RECOVERY, params)).scalar()
            if marked is None:
                await conn.execute(_FAIL_LOST, {"id": row.id, "lease": row.lease})
                report.failed += 1
                continue
        await enqueue_chunk(redis, row.id, row.lease, row.queue, suffix=f":recovery{marked}")
        report.recovered += 1
        log.warning("recovering execution %s (attempt %s)", row.id, marked)
    for row in pending:
        if await enqueue_chunk(redis, uuid.UUID(str(row.id)), row.lease, row.queue):
            report.requeued += 1
    return report
