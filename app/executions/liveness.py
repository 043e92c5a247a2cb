"""Which worker processes are alive: each records itself in one Redis hash every heartbeat
interval (host, pid, queues, executions in flight, RSS); readers ignore entries older than
three intervals, and a worker that stops cleanly removes its own."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from collections.abc import Awaitable
from typing import Any, cast

from redis.asyncio import Redis

WORKERS_KEY = "agents:workers"


def describe_worker(
    worker_id: str, queues: list[str], running: int, started_at: float
) -> dict[str, Any]:
    return {
        "id": worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": queues,
        "running": running,
        "rss_mb": rss_mb(),
        "started_at": started_at,
        "seen_at": time.time(),
    }


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak, in MiB."""
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return round(rss / 2**20, 1)


async def record_worker(redis: Redis, worker: dict[str, Any]) -> None:
    await cast(Awaitable[int], redis.hset(WORKERS_KEY, worker["id"], json.dumps(worker)))


async def forget_worker(redis: Redis, worker_id: str) -> None:
    await cast(Awaitable[int], redis.hdel(WORKERS_KEY, worker_id))


async def live_workers(redis: Redis, stale_after: float) -> list[dict[str, Any]]:
    """The workers seen within ``stale_after`` seconds, by id; older entries are deleted."""
    now = time.time()
    alive, dead = [], []
    entries = await cast(Awaitable[dict[Any, Any]], redis.hgetall(WORKERS_KEY))
    for field, raw in entries.items():
        worker = json.loads(raw)
        if now - float(worker.get("seen_at", 0)) <= stale_after:
            alive.append(worker)
        else:
            dead.append(field)
    if dead:
        await cast(Awaitable[int], redis.hdel(WORKERS_KEY, *dead))
    return sorted(alive, key=lambda worker: str(worker["id"]))
