"""Runs one arq worker per queue in one process, sharing the process's resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.executions.interrupts import listen_for_stops
from app.executions.liveness import describe_worker, forget_worker, record_worker
from app.redis import arq_pool, job_deserializer, job_serializer
from app.schedules.service import sync_configured_schedules
from workers.context import close_context, open_context
from workers.jobs import cron_jobs, functions

log = logging.getLogger(__name__)


class WorkerGroup:
    """The arq workers of one process; ``run`` returns when they stop (signal, burst or stop()).

    ``burst`` stops the workers once no job is running and none is due: jobs deferred to later
    (the timers of waits) are left for later, unlike arq's own burst mode, which waits for them.
    """

    def __init__(self, settings: Settings, queues: list[str], *, burst: bool = False) -> None:
        self.settings = settings
        self.queues = queues
        self.burst = burst
        self.workers: list[Worker] = []

    async def run(self, *, handle_signals: bool = True) -> None:
        assert self.settings.redis_url, "redis_url must be resolved before workers start"
        ctx = await open_context(self.settings)
        await self._sync_schedules(ctx["db"])
        redis_settings = RedisSettings.from_dsn(self.settings.redis_url)
        tuning = self.settings.worker
        for index, queue in enumerate(self.queues):
            self.workers.append(
                Worker(
                    functions(self.settings.job_timeout()),
                    queue_name=queue,
                    # One cron sweep per process is enough.
                    cron_jobs=cron_jobs(tuning.sweep_interval)
                    if index == 0 and not self.burst
                    else None,
                    redis_settings=redis_settings,
                    handle_signals=False,
                    max_jobs=tuning.max_jobs,
                    poll_delay=tuning.poll_delay,
                    job_timeout=self.settings.job_timeout(),
                    job_serializer=job_serializer,
                    job_deserializer=job_deserializer,
                    ctx=dict(ctx),
                    log_results=False,
                )
            )
        listener = asyncio.create_task(listen_for_stops(self.settings.redis_url, ctx["running"]))
        alive = asyncio.create_task(self._announce_alive(ctx))
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
        log.info("workers started on queues %s", ", ".join(self.queues))
        idle_watch = asyncio.create_task(self._stop_when_idle()) if self.burst else None
        try:
            await asyncio.gather(*(w.async_run() for w in self.workers), return_exceptions=False)
        except asyncio.CancelledError:
            pass
        finally:
            alive.cancel()
            if idle_watch is not None:
                idle_watch.cancel()
            for worker in self.workers:
                await worker.close()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await close_context(ctx)

    async def _announce_alive(self, ctx: dict[str, Any]) -> None:
        """Record this process as a live worker every heartbeat interval; forget it on stop."""
        redis = Redis.from_url(self.settings.redis_url or "")
        started_at = time.time()
        try:
            while True:
                with contextlib.suppress(Exception):  # Redis away: the next beat tells
                    await record_worker(
                        redis,
                        describe_worker(
                            ctx["worker_id"], self.queues, ctx["heartbeat"].held, started_at
                        ),
                    )
                await asyncio.sleep(self.settings.worker.heartbeat_interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(forget_worker(redis, ctx["worker_id"]))
            await redis.aclose()

    async def _sync_schedules(self, db: AsyncEngine) -> None:
        """The configured cron schedules become the schedules marked as configured."""
        assert self.settings.redis_url
        redis = await arq_pool(self.settings.redis_url)
        try:
            await sync_configured_schedules(db, redis, self.settings)
        finally:
            await redis.aclose()

    async def _stop_when_idle(self) -> None:
        """For ``burst``: stop once, twice in a row, no job runs and none is due."""
        assert self.settings.redis_url
        redis = Redis.from_url(self.settings.redis_url)
        idle_checks = 0
        try:
            while idle_checks < 2:
                await asyncio.sleep(self.settings.worker.poll_delay * 2)
                now_ms = time.time() * 1000
                due = [await redis.zcount(queue, "-inf", now_ms) for queue in self.queues]
                running = any(worker.tasks for worker in self.workers)
                idle_checks = idle_checks + 1 if not running and not any(due) else 0
        finally:
            await redis.aclose()
        self.stop()

    def stop(self) -> None:
        for worker in self.workers:
            worker.handle_sig(signal.SIGTERM)
