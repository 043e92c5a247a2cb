"""``GET /api/admin/queues/history``: per queue and per minute over a recent window, the depth
the sweep sampled (Redis), and the executions started, completed and failed and their wait
before starting (PostgreSQL). One statement for PostgreSQL and one pipeline for Redis, however
many queues; minutes without anything are zeros (depth: none without a sample)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from arq.connections import ArqRedis
from pydantic import BaseModel, Field
from sqlalchemy import Integer, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.admin.queues import Seconds, depth_key, rounded_seconds
from app.config import Settings
from app.executions.transitions import TERMINAL, Status

# Unfinished executions that may have started: all but ``scheduled`` (not started yet).
_MAY_HAVE_STARTED = sorted(set(Status) - TERMINAL - {Status.SCHEDULED})

# One row per queue and minute with anything in it, and (``queue`` NULL) per minute for every
# queue together, from one scan. Each execution yields up to two events: its start (with its
# wait: due, i.e. created or ``run_at``, to started) and its end as completed or failed. The
# WHERE picks the executions with an event in the window through indexes, never scanning the
# table: those that finished in it (the partial ``ix_agent_executions_completed_at``; started in
# the window implies finished after it) and the unfinished ones
# (``ix_agent_executions_status_created_at``), whose number is bounded by the live work.
# ``since`` (Unix seconds) is rendered into the statement, not sent as a parameter: a generic
# plan of a prepared statement cannot tell how selective ``>= $1`` is and would scan the table.
_HISTORY = text(
    f"""
    SELECT e.queue,
        floor(extract(epoch FROM ev.at) / 60)::bigint * 60 AS minute,
        count(*) FILTER (WHERE ev.kind = 'started') AS started,
        count(*) FILTER (WHERE ev.kind = 'completed') AS completed,
        count(*) FILTER (WHERE ev.kind = 'failed') AS failed,
        avg(ev.wait) AS wait_mean,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY ev.wait) AS wait_p95
    FROM agent_executions AS e
    CROSS JOIN LATERAL (
        VALUES ('started', e.started_at,
                extract(epoch FROM e.started_at - coalesce(e.run_at, e.created_at))),
               (e.status, e.completed_at, NULL)
    ) AS ev (kind, at, wait)
    WHERE (e.completed_at >= to_timestamp(:since)
           OR (e.status IN ({", ".join(f"'{status}'" for status in _MAY_HAVE_STARTED)})
               AND e.started_at >= to_timestamp(:since)))
      AND ev.at >= to_timestamp(:since) AND ev.kind IN ('started', 'completed', 'failed')
    GROUP BY GROUPING SETS ((e.queue, minute), (minute))
    """
).bindparams(bindparam("since", type_=Integer, literal_execute=True))


class QueueMinute(BaseModel):
    at: datetime = Field(description="The start of the minute (UTC).")
    depth: int | None = Field(
        description="The most jobs waiting (due, not started) sampled in the minute; none when "
        "nothing was sampled (the workers' sweep samples every ``sweep_interval``)."
    )
    started: int
    completed: int
    failed: int
    wait_seconds: Seconds = Field(
        description="Of the executions started in the minute: due (created, or its run_at) to "
        "started."
    )


class QueueHistory(BaseModel):
    name: str
    minutes: list[QueueMinute] = Field(description="Oldest first, the current minute last.")


class QueuesHistory(BaseModel):
    minutes: int = Field(description="How many minutes each series has.")
    since: datetime = Field(description="The start of the first minute (UTC).")
    queues: list[QueueHistory]
    overall: QueueHistory = Field(
        description="Every queue together (``name`` is ``*``); its depth is the sum of the "
        "queues' sampled depths."
    )


@dataclass(slots=True)
class _Minute:
    depth: int | None = None
    started: int = 0
    completed: int = 0
    failed: int = 0
    wait_mean: float | None = None
    wait_p95: float | None = None


def _depth_samples(members: Iterable[bytes | str]) -> dict[int, int]:
    """The highest depth per minute (Unix seconds of its start) of one queue's samples."""
    depths: dict[int, int] = {}
    for member in members:
        at_ms, _, depth = (member.decode() if isinstance(member, bytes) else member).partition(":")
        minute = int(at_ms) // 60_000 * 60
        depths[minute] = max(depths.get(minute, 0), int(depth))
    return depths


def _minute(start: int, found: _Minute) -> QueueMinute:
    return QueueMinute(
        at=datetime.fromtimestamp(start, UTC),
        depth=found.depth,
        started=found.started,
        completed=found.completed,
        failed=found.failed,
        wait_seconds=Seconds(mean=found.wait_mean, p95=found.wait_p95),
    )


def _series(name: str, starts: list[int], minutes: Mapping[int, _Minute]) -> QueueHistory:
    """Every minute of ``starts``, those without a row as zeros."""
    return QueueHistory(
        name=name, minutes=[_minute(start, minutes.get(start) or _Minute()) for start in starts]
    )


async def queue_history(
    session: AsyncSession, redis: ArqRedis, settings: Settings, minutes: int
) -> QueuesHistory:
    """The last ``minutes`` minutes, the current one included, per queue and overall."""
    current = int(time.time()) // 60 * 60
    starts = [current - 60 * back for back in range(minutes - 1, -1, -1)]
    per_queue: defaultdict[str, dict[int, _Minute]] = defaultdict(dict)
    overall: dict[int, _Minute] = {}
    for row in await session.execute(_HISTORY, {"since": starts[0]}):
        found = _Minute(
            started=row.started,
            completed=row.completed,
            failed=row.failed,
            wait_mean=rounded_seconds(row.wait_mean),
            wait_p95=rounded_seconds(row.wait_p95),
        )
        (overall if row.queue is None else per_queue[row.queue])[int(row.minute)] = found
    names = settings.queue_names()
    names += sorted(set(per_queue) - set(names))
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrangebyscore(depth_key(name), starts[0] * 1000, "+inf")
        replies = await pipe.execute()
    for name, samples in zip(names, replies, strict=True):
        for minute, depth in _depth_samples(samples).items():
            per_queue[name].setdefault(minute, _Minute()).depth = depth
            total = overall.setdefault(minute, _Minute())
            total.depth = (total.depth or 0) + depth
    return QueuesHistory(
        minutes=minutes,
        since=datetime.fromtimestamp(starts[0], UTC),
        queues=[_series(name, starts, per_queue[name]) for name in names],
        overall=_series("*", starts, overall),
    )
