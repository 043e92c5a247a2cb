"""The Redis connection: one arq pool serves the queue, pub/sub publishing and control.

Jobs are serialized as JSON, not with arq's default pickle: anyone who can write to Redis could
otherwise make every worker run code of their choosing by queueing a crafted job.
"""

from __future__ import annotations

import json
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool


def job_serializer(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def job_deserializer(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


async def arq_pool(url: str) -> ArqRedis:
    pool: ArqRedis = await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    return pool
