"""Job names, ids and enqueueing. A job id is ``{execution_id}:{lease}``: enqueueing the same
chunk twice is a no-op, and a job for an old lease finds nothing to claim."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import NoScriptError

RUN_EXECUTION = "run_execution"
EXPIRE_WAIT = "expire_event_wait"
START_SCHEDULED = "start_scheduled"
FIRE_SCHEDULES = "fire_schedules"
DELIVER_WEBHOOK = "deliver_webhook"

# arq's enqueue_job (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips) as one atomic
# script: one round trip on the start and chunk paths. Same keys and payload as arq writes.
_ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE_SCRIPT.encode()).hexdigest()


def job_id(execution_id: uuid.UUID | str, lease: int) -> str:
    return f"{execution_id}:{lease}"


async def enqueue_chunk(
    redis: ArqRedis,
    execution_id: uuid.UUID | str,
    lease: int,
    queue: str,
    *,
    suffix: str = "",
    delay: float = 0.0,
    retries: int = 0,
) -> bool:
    """Queue the next chunk of an execution whose current lease is ``lease`` (``delay``
    seconds from now; ``retries``: how many transient failures came before it).

    False when a job with that id already exists (queued, running, or its result kept).
    """
    job = job_id(execution_id, lease) + suffix
    now_ms = int(time.time() * 1000)
    payload = serialize_job(
        RUN_EXECUTION,
        (str(execution_id), lease),
        {"retries": retries} if retries else {},
        None,
        now_ms,
        serializer=redis.job_serializer,
    )
    keys_and_args: list[Any] = [
        job_key_prefix + job, result_key_prefix + job, queue,
        expires_extra_ms, payload, now_ms + int(delay * 1000), job,
    ]  # fmt: skip
    try:
        added = await redis.evalsha(_ENQUEUE_SHA, 3, *keys_and_args)  # type: ignore[misc]
    except NoScriptError:
        added = await redis.eval(_ENQUEUE_SCRIPT, 3, *keys_and_args)  # type: ignore[misc]
    return bool(added)


async def enqueue_timer(
    redis: ArqRedis, function: str, *args: object, job_id: str, queue: str, at: datetime
) -> None:
    """Queue ``function(*args)`` for ``at`` under ``job_id`` (a duplicate id is a no-op). Every
    timer has a sweep behind it that acts if its job is lost."""
    await redis.enqueue_job(function, *args, _job_id=job_id, _queue_name=queue, _defer_until=at)


async def enqueue_wait_timer(
    redis: ArqRedis, execution_id: uuid.UUID, lease: int, queue: str, deadline: datetime
) -> None:
    """The job that ends a wait at its ``deadline`` (one per wait: the id holds the lease, which
    a resume renews)."""
    job_id = f"{execution_id}:wait:{lease}"
    await enqueue_timer(
        redis, EXPIRE_WAIT, str(execution_id), job_id=job_id, queue=queue, at=deadline
    )


async def enqueue_start_timer(
    redis: ArqRedis, execution_id: uuid.UUID, lease: int, queue: str, run_at: datetime
) -> None:
    """The job that starts a scheduled execution at ``run_at`` (the id holds the lease, which a
    resume renews)."""
    job_id = f"{execution_id}:start:{lease}"
    await enqueue_timer(
        redis, START_SCHEDULED, str(execution_id), job_id=job_id, queue=queue, at=run_at
    )


async def enqueue_schedule_timer(
    redis: ArqRedis, schedule_id: int, at: datetime, queue: str
) -> None:
    """The job that fires the due cron schedules at ``at``, a schedule's next fire."""
    job_id = f"schedule:{schedule_id}:{int(at.timestamp())}"
    await enqueue_timer(redis, FIRE_SCHEDULES, job_id=job_id, queue=queue, at=at)


async def enqueue_webhook_attempt(
    redis: ArqRedis, queue: str, delivery_id: int, attempt: int, at: datetime, *, suffix: str = ""
) -> None:
    """Attempt ``attempt`` of a webhook delivery, at ``at``."""
    job_id = f"webhook:{delivery_id}:{attempt}{suffix}"
    await enqueue_timer(redis, DELIVER_WEBHOOK, delivery_id, job_id=job_id, queue=queue, at=at)
