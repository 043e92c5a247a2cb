"""The baseline's worker process: drain a queue of no-op arq jobs once and report the timing.

Run by ``bench.engine``; the jobs are enqueued before this process starts, so its start-up is
not timed. Prints one JSON line on stdout::

    python -m bench.noop_worker --redis-url unix:///...?db=15 [--poll-delay S] [--max-jobs N]

Without ``--poll-delay`` / ``--max-jobs`` the arq ``Worker`` keeps its own defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func


async def noop(ctx: dict[str, Any]) -> None:
    return None


class _Clock:
    """When the first job started and the last one ended (after arq stored its result)."""

    def __init__(self) -> None:
        self.first_start: float | None = None
        self.last_end: float | None = None

    async def on_job_start(self, ctx: dict[str, Any]) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    async def after_job_end(self, ctx: dict[str, Any]) -> None:
        self.last_end = time.perf_counter()


async def run(redis_url: str, poll_delay: float | None, max_jobs: int | None) -> dict[str, Any]:
    clock = _Clock()
    tuning: dict[str, Any] = {}
    if poll_delay is not None:
        tuning["poll_delay"] = poll_delay
    if max_jobs is not None:
        tuning["max_jobs"] = max_jobs
    worker = Worker(
        [func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(redis_url),
        burst=True,
        handle_signals=False,
        on_job_start=clock.on_job_start,
        after_job_end=clock.after_job_end,
        **tuning,
    )
    started = time.perf_counter()
    try:
        await worker.async_run()
    finally:
        await worker.close()
    finished = time.perf_counter()
    jobs = worker.jobs_complete
    drain = (
        clock.last_end - clock.first_start
        if clock.first_start is not None and clock.last_end is not None
        else None
    )
    return {
        "jobs_complete": jobs,
        "jobs_failed": worker.jobs_failed,
        "poll_delay": worker.poll_delay_s,
        "max_jobs": worker.max_jobs,
        "drain_seconds": drain,
        "burst_seconds": finished - started,
        "jobs_per_second": jobs / drain if drain else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--poll-delay", type=float)
    parser.add_argument("--max-jobs", type=int)
    args = parser.parse_args()
    try:
        import uvloop  # the service's processes run on uvloop too (app.cli)

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    result = asyncio.run(run(args.redis_url, args.poll_delay, args.max_jobs))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
