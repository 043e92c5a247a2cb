"""Job names and ids. A job id is ``{execution_id}:{lease}``: enqueueing the same chunk twice is
a no-op in arq, and a job for an old lease finds nothing to claim."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

RUN_EXECUTION = "run_execution"


def job_id(execution_id: uuid.UUID | str, lease: int) -> str:
    return f"{execution_id}:{lease}"


async def enqueue_chunk(
    redis: ArqRedis, execution_id: uuid.UUID | str, lease: int, queue: str, *, suffix: str = ""
) -> bool:
    """Queue the next chunk of an execution whose current lease is ``lease``.

    False when a job with that id already exists (queued, running, or its result kept).
    """
    job = await redis.enqueue_job(
        RUN_EXECUTION,
        str(execution_id),
        lease,
        _job_id=job_id(execution_id, lease) + suffix,
        _queue_name=queue,
    )
    return job is not None
