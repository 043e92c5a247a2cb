"""The Redis connection: one arq pool serves the queue, pub/sub publishing and control."""

from __future__ import annotations

from arq.connections import ArqRedis, RedisSettings, create_pool


async def arq_pool(url: str) -> ArqRedis:
    pool: ArqRedis = await create_pool(RedisSettings.from_dsn(url))
    return pool
