"""The hand-written baseline: what a team would write without this service.

One arq job per execution runs K durable steps on raw asyncpg, each: INSERT a log row, UPDATE
the execution's progress with a ~2 KB JSON checkpoint, PUBLISH one event. Same arq tuning as
the service's worker. The jobs are enqueued before this process starts; it drains them in
burst mode and prints one JSON line (drain time from the first job's start to the last one's
end, and the process's CPU seconds over the drain)::

    python -m bench.raw_worker --redis-url URL --database-url URL --steps K \\
        [--poll-delay S] [--max-jobs N] [--pool-size P]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import asyncpg
from arq.connections import RedisSettings
from arq.worker import Worker, func

SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_executions (
    id bigint PRIMARY KEY, step int NOT NULL DEFAULT 0, checkpoint jsonb,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS raw_logs (
    id bigserial PRIMARY KEY, execution_id bigint NOT NULL, step int NOT NULL,
    message text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
"""
# About 2 KB: a conversation's worth of state, re-encoded each step as a service would.
CHECKPOINT = {"messages": [{"role": "user", "content": "x" * 180} for _ in range(10)]}


async def run_steps(ctx: dict[str, Any], execution_id: int) -> None:
    pool: asyncpg.Pool = ctx["pool"]
    for step in range(1, ctx["steps"] + 1):
        checkpoint = {**CHECKPOINT, "step": step}
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO raw_logs (execution_id, step, message) VALUES ($1, $2, $3)",
                execution_id,
                step,
                f"Step {step} completed",
            )
            await conn.execute(
                "UPDATE raw_executions SET step = $2, checkpoint = $3::jsonb, updated_at = now() "
                "WHERE id = $1",
                execution_id,
                step,
                json.dumps(checkpoint),
            )
        event = {"event": "step.completed", "execution_id": execution_id, "step": step}
        await ctx["redis"].publish(f"raw.{execution_id}", json.dumps(event))


class _Clock:
    def __init__(self) -> None:
        self.first_start: float | None = None
        self.cpu_start: float | None = None
        self.last_end: float | None = None
        self.cpu_end: float | None = None

    async def on_job_start(self, ctx: dict[str, Any]) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()
            self.cpu_start = time.process_time()

    async def after_job_end(self, ctx: dict[str, Any]) -> None:
        self.last_end = time.perf_counter()
        self.cpu_end = time.process_time()


async def run(options: argparse.Namespace) -> dict[str, Any]:
    clock = _Clock()
    pool = await asyncpg.create_pool(
        options.database_url, min_size=options.pool_size, max_size=options.pool_size
    )

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["pool"] = pool
        ctx["steps"] = options.steps

    worker = Worker(
        [func(run_steps, name="run_steps")],
        redis_settings=RedisSettings.from_dsn(options.redis_url),
        burst=True,
        handle_signals=False,
        on_startup=startup,
        on_job_start=clock.on_job_start,
        after_job_end=clock.after_job_end,
        poll_delay=options.poll_delay,
        max_jobs=options.max_jobs,
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()
        await pool.close()
    if clock.first_start is None or clock.last_end is None:
        raise RuntimeError("no job ran")
    assert clock.cpu_start is not None
    assert clock.cpu_end is not None
    drain = clock.last_end - clock.first_start
    executions = worker.jobs_complete
    return {
        "executions": executions,
        "failed": worker.jobs_failed,
        "drain_seconds": drain,
        "executions_per_second": executions / drain,
        "cpu_seconds": clock.cpu_end - clock.cpu_start,
        "cpu_ms_per_step": 1000 * (clock.cpu_end - clock.cpu_start) / (executions * options.steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--poll-delay", type=float, required=True)
    parser.add_argument("--max-jobs", type=int, required=True)
    parser.add_argument("--pool-size", type=int, default=20)
    options = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(options))), flush=True)


if __name__ == "__main__":
    main()
