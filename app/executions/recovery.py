"""The sweep that makes Redis losses and dead workers delay work, never lose it.

- ``running`` executions whose heartbeat is stale and for which no job is queued get a recovery
  job under their current lease (they resume from their last committed step), at most
  ``max_recoveries`` times; after that they fail with ``worker_lost``.
- ``pending`` executions that have waited longer than ``stale_after`` with no job queued get
  their job again; ``scheduled`` ones whose time has come start, and due cron schedules fire
  (their timer jobs were lost); webhook deliveries whose attempt job was lost are queued again.
- parents waiting for subagents that have all finished are woken, and waits for events whose
  deadline passed end (their timer jobs were lost); webhook message ids older than 30 days and
  events older than ``events.retention_days`` are forgotten.

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
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.events.repository import prune_events
from app.events.service import expire_due_waits
from app.executions import recovery_repository, repository, subagent_repository
from app.executions.children import wake_parent
from app.executions.effects import Effects, announce_committed
from app.executions.jobs import enqueue_chunk, job_id
from app.executions.service import IDEMPOTENCY_KEEP_SECONDS
from app.outbound.service import queue_overdue
from app.schedules.service import fire_due_schedules
from app.webhooks.repository import prune_messages
from app.webhooks.service import KEEP_MESSAGES_SECONDS

log = logging.getLogger(__name__)


async def start_scheduled(
    db: AsyncEngine, redis: ArqRedis, settings: Settings, execution_id: uuid.UUID
) -> bool:
    """Start a scheduled execution if its time has come (a conditional UPDATE: of its timer job
    and the sweep, only one starts it). False when it is not due or no longer scheduled."""
    async with db.begin() as conn:
        change = await recovery_repository.start_on_time(conn, execution_id)
    return await announce_committed(db, redis, settings, change)


_BATCH = 500


@dataclass
class SweepReport:
    recovered: int = 0
    failed: int = 0
    requeued: int = 0
    woken: int = 0
    expired: int = 0
    started: int = 0
    fired: int = 0
    notified: int = 0


def _recovery_job(attempt: int) -> str:
    return f":recovery{attempt}"


async def _is_queued(redis: ArqRedis, *job_ids: str) -> bool:
    """Whether arq holds any of these jobs (queued or running; not merely a kept result)."""
    return bool(await redis.exists(*(job_key_prefix + job for job in job_ids)))


async def sweep(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> SweepReport:
    report = SweepReport()
    stale_after = settings.worker.stale_after
    effects = Effects(redis, db, settings)
    async with db.connect() as conn:
        running = await recovery_repository.stale_running(conn, stale_after, _BATCH)
        pending = await recovery_repository.stale_pending(conn, stale_after, _BATCH)
    for stale in running:
        base = job_id(stale.id, stale.lease)
        if await _is_queued(redis, base, base + _recovery_job(stale.recovery_count)):
            continue  # its job is waiting for a free worker
        if stale.recovery_count >= settings.worker.max_recoveries:
            async with db.begin() as conn:
                failed = await recovery_repository.abandon(conn, stale)
            if failed is not None:
                report.failed += 1
                log.error("execution %s failed: its workers stopped responding", stale.id)
                effects.announce(failed)
            continue
        async with db.begin() as conn:
            attempt = await recovery_repository.mark_recovery(conn, stale)
        if attempt is None:
            continue  # another sweep, or the execution itself, moved on
        effects.enqueue(stale.id, stale.lease, stale.queue, suffix=_recovery_job(attempt))
        report.recovered += 1
        log.warning("recovering execution %s (attempt %s)", stale.id, attempt)
    await effects.run()
    async with db.connect() as conn:
        waiting = await subagent_repository.waiting_parents(conn)
    for parent_id in waiting:
        woken = await wake_parent(db, parent_id)
        if woken is not None:
            report.woken += 1
            effects.announce(woken)
    await effects.run()
    report.expired = await expire_due_waits(db, redis, settings)
    async with db.connect() as conn:
        due = await recovery_repository.due_scheduled(conn, _BATCH)
    report.started = sum([await start_scheduled(db, redis, settings, i) for i in due])
    report.fired = await fire_due_schedules(db, redis, settings)
    report.notified = await queue_overdue(db, redis, settings.queues.default)
    async with db.begin() as conn:
        await prune_messages(conn, KEEP_MESSAGES_SECONDS)
        await prune_events(conn, settings.events.retention_days * 86_400)
        await repository.prune_idempotency_keys(conn, IDEMPOTENCY_KEEP_SECONDS)
    for stale in pending:
        if await _is_queued(redis, job_id(stale.id, stale.lease)):
            continue
        async with db.begin() as conn:
            if not await recovery_repository.touch_pending(conn, stale, stale_after):
                continue
        # A fresh job id: the first job's id may be blocked by arq's kept result of a failure.
        suffix = f":requeue{int(time.time())}"
        if await enqueue_chunk(redis, stale.id, stale.lease, stale.queue, suffix=suffix):
            report.requeued += 1
    return report
