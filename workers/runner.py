"""Runs one arq worker per queue in one process, sharing the process's resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.executions.interrupts import listen_for_stops
from app.executions.liveness import describe_worker, forget_worker, record_worker, rss_mb
from app.redis import arq_pool, job_deserializer, job_serializer
from app.schedules.service import sync_configured_schedules
from workers.context import close_context, open_context
from workers.jobs import cron_jobs, functions

log = logging.getLogger(__name__)


class WorkerGroup:
    """The arq workers of one process; ``run`` returns when they stop (signal, burst or stop()).

    Stopping drains: the workers take no new job, running chunks end at their next step
    boundary and re-enqueue themselves, and what still runs after ``worker.drain_grace``
    seconds is cancelled and handed over from its last committed step.

    ``burst`` stops the workers once no job is running and none is due: jobs deferred to later
    (the timers of waits) are left for later, unlike arq's own burst mode, which waits for them.
    ``max_memory_mb``: past it, the process stops as above and ``recycled`` is set, so its
    supervisor starts a fresh one.
    """

    def __init__(
        self,
        settings: Settings,
        queues: list[str],
        *,
        burst: bool = False,
        max_jobs: int | None = None,
        job_timeout: float | None = None,
        max_memory_mb: int | None = None,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.burst = burst
        self.max_jobs = max_jobs or settings.worker.max_jobs
        self.job_timeout = job_timeout or settings.job_timeout()
        self.max_memory_mb = max_memory_mb
        self.recycled = False
        self.failed = False  # a queue's worker died; the process should be restarted
        self.workers: list[Worker] = []
        self._draining: asyncio.Event | None = None
        self._stopping = False

    async def run(self, *, handle_signals: bool = True) -> None:
        assert self.settings.redis_url, "redis_url must be resolved before workers start"
        ctx = await open_context(self.settings)
        self._draining = ctx["draining"]
        await self._sync_schedules(ctx["db"])
        redis_settings = RedisSettings.from_dsn(self.settings.redis_url)
        tuning = self.settings.worker
        for index, queue in enumerate(self.queues):
            self.workers.append(
                Worker(
                    functions(self.job_timeout),
                    queue_name=queue,
                    # One cron sweep per process is enough.
                    cron_jobs=cron_jobs(tuning.sweep_interval)
                    if index == 0 and not self.burst
                    else None,
                    redis_settings=redis_settings,
                    handle_signals=False,
                    max_jobs=self.max_jobs,
                    poll_delay=tuning.poll_delay,
                    job_timeout=self.job_timeout,
                    job_completion_wait=math.ceil(tuning.drain_grace),
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
            if not self._stopping:  # else stopped while starting: take no job at all
                # Every queue's worker drains to its end: the first one done must not cut the
                # rest short.
                await asyncio.gather(*(self._serve(worker) for worker in self.workers))
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

    async def _serve(self, worker: Worker) -> None:
        """One queue's arq worker until it stops. If it dies (arq's poll loop lets a Redis
        error through), the whole process drains and reports ``failed``: a process that
        announces itself alive must serve all its queues, and its supervisor restarts it."""
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            pass  # how arq's workers end when stopped
        except Exception:
            log.exception("the worker of queue %s died: stopping this process", worker.queue_name)
            self.failed = True
            self.stop()

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
                self._recycle_if_over(rss_mb(), ran_work=ctx["heartbeat"].claims > 0)
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

    def _recycle_if_over(self, used_mb: float, *, ran_work: bool) -> None:
        if self.max_memory_mb is None or self.recycled or used_mb <= self.max_memory_mb:
            return
        if not ran_work:
            # Replacing it would not help: a fresh process is over the cap before any work.
            log.error(
                "worker uses %.0f MB before running anything, over its max_memory_mb of %d: "
                "raise max_memory_mb; stopping",
                used_mb,
                self.max_memory_mb,
            )
            self.failed = True
            self.stop()
            return
        log.warning(
            "worker uses %.0f MB, over its max_memory_mb of %d: handing its executions over "
            "and stopping so a fresh process takes its place",
            used_mb,
            self.max_memory_mb,
        )
        self.recycled = True
        self.stop()

    def stop(self) -> None:
        """Drain (see the class): safe to call more than once."""
        if self._stopping:
            return
        self._stopping = True
        if self._draining is not None:
            self._draining.set()
        for worker in self.workers:
            worker.handle_sig_wait_for_completion(signal.SIGTERM)
