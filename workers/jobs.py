"""Every arq job and cron the workers run, registered in one place."""

from __future__ import annotations

import logging
import uuid
from typing import cast

from arq import cron
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function, func

from app.admin.queues import record_depth_samples
from app.events.service import expire_wait
from app.executions.engine import WorkerContext, run_execution
from app.executions.jobs import (
    DELIVER_WEBHOOK,
    EXPIRE_WAIT,
    FIRE_SCHEDULES,
    RUN_EXECUTION,
    START_SCHEDULED,
)
from app.executions.recovery import start_scheduled as start_if_due
from app.executions.recovery import sweep
from app.executions.retention import prune
from app.outbound.service import attempt_delivery
from app.schedules.service import fire_due_schedules

log = logging.getLogger(__name__)


async def sweep_executions(ctx: WorkerContext) -> dict[str, int]:
    report = await sweep(ctx["db"], ctx["redis"], ctx["settings"])
    await record_depth_samples(ctx["redis"], ctx["settings"].queue_names())
    if any(report.__dict__.values()):
        log.info("sweep: %s", report)
    return report.__dict__


async def prune_retention(ctx: WorkerContext) -> dict[str, int]:
    """Daily: delete what finished executions left behind longer ago than the retention."""
    report = await prune(ctx["db"], ctx["settings"])
    log.info("retention: %s", report.summary())
    return {"logs": report.logs, "executions": report.executions, "workspaces": report.workspaces}


async def expire_event_wait(ctx: WorkerContext, execution_id: str) -> str:
    """The timer of a wait: ends it if its deadline has passed."""
    expired = await expire_wait(ctx["db"], ctx["redis"], ctx["settings"], uuid.UUID(execution_id))
    return "expired" if expired else "not due"


async def start_scheduled(ctx: WorkerContext, execution_id: str) -> str:
    """The timer of a scheduled execution: starts it if its time has come."""
    started = await start_if_due(ctx["db"], ctx["redis"], ctx["settings"], uuid.UUID(execution_id))
    return "started" if started else "not due"


async def fire_schedules(ctx: WorkerContext) -> int:
    """A cron schedule's timer: fires every schedule that is due."""
    return await fire_due_schedules(ctx["db"], ctx["redis"], ctx["settings"])


async def deliver_webhook(ctx: WorkerContext, delivery_id: int) -> str:
    """One attempt of a webhook delivery; the next is queued when it must be retried."""
    return await attempt_delivery(
        ctx["db"], ctx["redis"], ctx["http"], ctx["settings"], delivery_id
    )


def functions(job_timeout: float) -> list[Function]:
    # keep_result blocks re-use of a job id for that long: that is what makes a duplicate
    # enqueue of the same chunk a no-op (job ids are ``{execution}:{lease}``).
    return [
        func(
            cast(WorkerCoroutine, run_execution),
            name=RUN_EXECUTION,
            timeout=job_timeout,
            keep_result=3600,
            max_tries=3,
        ),
        func(cast(WorkerCoroutine, expire_event_wait), name=EXPIRE_WAIT, max_tries=3),
        func(cast(WorkerCoroutine, start_scheduled), name=START_SCHEDULED, max_tries=3),
        func(cast(WorkerCoroutine, fire_schedules), name=FIRE_SCHEDULES, max_tries=3),
        func(cast(WorkerCoroutine, deliver_webhook), name=DELIVER_WEBHOOK, max_tries=1),
    ]


def cron_jobs(interval_seconds: int) -> list[CronJob]:
    seconds = set(range(0, 60, max(1, min(interval_seconds, 60))))
    return [
        cron(
            cast(WorkerCoroutine, sweep_executions),
            second=seconds,
            run_at_startup=True,
            unique=True,
        ),
        # Once a day, at a quiet minute; one worker runs it (arq's cron jobs are unique).
        cron(
            cast(WorkerCoroutine, prune_retention),
            hour={3},
            minute={17},
            second={0},
            unique=True,
            timeout=3600,
        ),
    ]
