"""The engine benchmark's baseline: raw arq throughput on the same Redis.

``M`` no-op jobs are enqueued, then one arq ``Worker`` drains them in burst mode in its own
process (``bench.noop_worker``), which times the drain from the first job's start to the last
job's end, so process start-up is not counted. Run with arq's default settings, and for
reference with the service's ``[worker]`` tuning passed as ``--poll-delay`` / ``--max-jobs``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench.harness import Children


async def run_baseline(
    children: Children, redis_url: str, jobs: int, name: str, tuning: list[str]
) -> dict[str, Any]:
    """Enqueue ``jobs`` no-ops, then drain them with one worker process and time the drain."""
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        await pool.flushdb()
        batch = 200
        for start in range(0, jobs, batch):
            await asyncio.gather(
                *(pool.enqueue_job("noop") for _ in range(min(batch, jobs - start)))
            )
        queued = await pool.zcard("arq:queue")
    finally:
        await pool.aclose()
    process = children.start(
        name,
        [sys.executable, "-m", "bench.noop_worker", "--redis-url", redis_url, *tuning],
        stdout_pipe=True,
    )
    stdout, _ = await asyncio.to_thread(process.communicate, timeout=max(120.0, jobs / 20))
    children.processes.pop(name, None)
    if process.returncode != 0:
        raise RuntimeError(f"baseline worker failed; see {children.log_dir / (name + '.log')}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    result["jobs_enqueued"] = queued
    return result
