"""``GET /api/admin/queues``: per queue, what waits in Redis and what PostgreSQL says ran, and
the live workers. One statement for PostgreSQL and one pipeline for Redis, however many queues.

Also the depth sampler: the sweep records how many jobs wait in each queue in a per-queue sorted
set, which ``GET /api/admin/queues/history`` reads (:mod:`app.admin.queue_history`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.executions.liveness import live_workers

DEPTH_KEY_PREFIX = "agents:queue-depth:"
MAX_HISTORY_MINUTES = 120
# A minute more than the longest history, so its first (partial) minute is whole.
DEPTH_KEEP_SECONDS = (MAX_HISTORY_MINUTES + 1) * 60
# The sweep runs at most once a second: the window never holds more samples than this.
DEPTH_MAX_SAMPLES = DEPTH_KEEP_SECONDS
# Far more than the jobs a fleet of workers runs at once.
_STARTED_SCAN = 1000

# Every aggregate has its own FILTER, so the WHERE only has to let through each row one of them
# counts, using indexes (``ix_agent_executions_status_created_at`` and the partial
# ``ix_agent_executions_completed_at``): an execution started in the last hour has either
# finished since (completed_at >= started_at) or is unfinished, and never ``scheduled`` (a
# scheduled execution has not started). ``started_at`` has no index of its own.
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
    WHERE status IN ('pending', 'running', 'paused', 'awaiting_input', 'awaiting_event')
       OR completed_at > now() - interval '1 hour'
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


def rounded_seconds(value: Any) -> float | None:
    """A duration from PostgreSQL (numeric, float or NULL) as seconds to the millisecond."""
    return None if value is None else round(float(value), 3)


def _counts(stats: Mapping[str, Any], event: str) -> Counts:
    """``event``'s counts of a queue's row (zeros for a queue with no recent executions)."""
    return Counts(
        last_minute=stats.get(f"{event}_minute", 0), last_hour=stats.get(f"{event}_hour", 0)
    )


def _times(stats: Mapping[str, Any], what: str) -> Seconds:
    return Seconds(
        mean=rounded_seconds(stats.get(f"{what}_mean")),
        p95=rounded_seconds(stats.get(f"{what}_p95")),
    )


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


def depth_key(queue: str) -> str:
    """The sorted set of ``queue``'s depth samples: members ``{ms}:{depth}``, scored by time
    (milliseconds)."""
    return f"{DEPTH_KEY_PREFIX}{queue}"


async def _waiting_jobs(redis: ArqRedis, queues: Sequence[str], at_ms: int) -> list[int]:
    """Per queue, the jobs due at ``at_ms`` that no worker has started. arq keeps a job in its
    queue until it ends and takes the earliest due first, so the started ones are looked for
    among the first ``_STARTED_SCAN`` due (one ``EXISTS`` of their in-progress keys)."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zcount(queue, "-inf", at_ms)
            pipe.zrangebyscore(queue, "-inf", at_ms, start=0, num=_STARTED_SCAN)
        replies = await pipe.execute()
    due = [int(count) for count in replies[0::2]]
    heads = {index: head for index, head in enumerate(replies[1::2]) if head}
    if heads:
        async with redis.pipeline(transaction=False) as pipe:
            for head in heads.values():
                pipe.exists(*(in_progress_key_prefix + _text(job_id) for job_id in head))
            for index, started in zip(heads, await pipe.execute(), strict=True):
                due[index] -= int(started)
    return due


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def record_depth_samples(
    redis: ArqRedis, queues: Sequence[str], *, at: float | None = None
) -> dict[str, int]:
    """Record how many jobs wait in each queue now (or at ``at``, a Unix time), and return it.

    A waiting job is due and not started. Each queue's samples are trimmed to the last
    ``DEPTH_KEEP_SECONDS`` and at most ``DEPTH_MAX_SAMPLES``, and expire with the window once
    sampling stops. Three round trips, however many queues."""
    at_ms = int((time.time() if at is None else at) * 1000)
    depths = await _waiting_jobs(redis, queues, at_ms)
    async with redis.pipeline(transaction=False) as pipe:
        for queue, depth in zip(queues, depths, strict=True):
            key = depth_key(queue)
            pipe.zadd(key, {f"{at_ms}:{depth}": at_ms})
            pipe.zremrangebyscore(key, "-inf", f"({at_ms - DEPTH_KEEP_SECONDS * 1000}")
            pipe.zremrangebyrank(key, 0, -DEPTH_MAX_SAMPLES - 1)
            pipe.expire(key, DEPTH_KEEP_SECONDS)
        await pipe.execute()
    return dict(zip(queues, depths, strict=True))
