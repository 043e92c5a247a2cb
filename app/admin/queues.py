"""``GET /api/admin/queues``: per queue, what waits in Redis and what PostgreSQL says ran, and
the live workers. One statement for PostgreSQL and one pipeline for Redis, however many queues."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from arq.connections import ArqRedis
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.executions.liveness import live_workers

_STATS = text(
    """
    SELECT queue,
        count(*) FILTER (WHERE status = 'running') AS running,
        count(*) FILTER (WHERE status IN ('awaiting_input', 'awaiting_event')) AS awaiting,
        count(*) FILTER (WHERE started_at > now() - interval '1 minute') AS started_minute,
        count(*) FILTER (WHERE started_at > now() - interval '1 hour') AS started_hour,
        count(*) FILTER (WHERE status = 'completed' AND completed_at > now() - interval '1 minute')
            AS completed_minute,
        count(*) FILTER (WHERE status = 'completed' AND completed_at > now() - interval '1 hour')
            AS completed_hour,
        count(*) FILTER (WHERE status = 'failed' AND completed_at > now() - interval '1 minute')
            AS failed_minute,
        count(*) FILTER (WHERE status = 'failed' AND completed_at > now() - interval '1 hour')
            AS failed_hour,
        avg(extract(epoch FROM started_at - coalesce(run_at, created_at)))
            FILTER (WHERE started_at > now() - interval '1 hour') AS wait_mean,
        percentile_cont(0.95) WITHIN GROUP (
            ORDER BY extract(epoch FROM started_at - coalesce(run_at, created_at)))
            FILTER (WHERE started_at > now() - interval '1 hour') AS wait_p95,
        avg(extract(epoch FROM completed_at - started_at))
            FILTER (WHERE completed_at > now() - interval '1 hour') AS run_mean,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at))
            FILTER (WHERE completed_at > now() - interval '1 hour') AS run_p95
    FROM agent_executions
    WHERE status IN ('running', 'awaiting_input', 'awaiting_event')
       OR started_at > now() - interval '1 hour' OR completed_at > now() - interval '1 hour'
    GROUP BY queue
    """
)


class Counts(BaseModel):
    last_minute: int = 0
    last_hour: int = 0


class Seconds(BaseModel):
    mean: float | None = None
    p95: float | None = None


class QueueStats(BaseModel):
    name: str
    queued: int = Field(
        description="Jobs in Redis: due, deferred, or running (arq keeps a job in its queue "
        "until it ends)."
    )
    oldest_wait_seconds: float | None = Field(description="Age of the oldest due job.")
    running: int
    awaiting: int = Field(description="Executions parked for an answer or an event.")
    started: Counts
    completed: Counts
    failed: Counts
    wait_seconds: Seconds = Field(description="Due (created, or its run_at) to started, last hour.")
    run_seconds: Seconds = Field(description="Started to finished, last hour.")


class LiveWorker(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    running: int
    rss_mb: float
    started_at: float
    seen_at: float


class QueuesView(BaseModel):
    queues: list[QueueStats]
    workers: list[LiveWorker]


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _counts(stats: Mapping[str, Any], event: str) -> Counts:
    """``event``'s counts of a queue's row (zeros for a queue with no recent executions)."""
    return Counts(
        last_minute=stats.get(f"{event}_minute", 0), last_hour=stats.get(f"{event}_hour", 0)
    )


def _times(stats: Mapping[str, Any], what: str) -> Seconds:
    return Seconds(mean=_seconds(stats.get(f"{what}_mean")), p95=_seconds(stats.get(f"{what}_p95")))


async def queues_view(session: AsyncSession, redis: ArqRedis, settings: Settings) -> QueuesView:
    names = settings.queue_names()
    rows = {row.queue: dict(row._mapping) for row in (await session.execute(_STATS)).all()}
    names += sorted(set(rows) - set(names))
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(name)
            pipe.zrange(name, 0, 0, withscores=True)
        replies = await pipe.execute()
    stale_after = 3 * settings.worker.heartbeat_interval
    workers = [LiveWorker.model_validate(w) for w in await live_workers(redis, stale_after)]
    queues = []
    for index, name in enumerate(names):
        queued, oldest = replies[2 * index], replies[2 * index + 1]
        oldest_wait = None
        if oldest and oldest[0][1] <= now_ms:
            oldest_wait = round((now_ms - oldest[0][1]) / 1000, 3)
        stats = rows.get(name, {})
        queues.append(
            QueueStats(
                name=name,
                queued=int(queued),
                oldest_wait_seconds=oldest_wait,
                running=stats.get("running", 0),
                awaiting=stats.get("awaiting", 0),
                started=_counts(stats, "started"),
                completed=_counts(stats, "completed"),
                failed=_counts(stats, "failed"),
                wait_seconds=_times(stats, "wait"),
                run_seconds=_times(stats, "run"),
            )
        )
    return QueuesView(queues=queues, workers=workers)
