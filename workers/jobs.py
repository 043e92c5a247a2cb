"""Every arq job and cron the workers run, registered in one place."""

from __future__ import annotations

import logging
from typing import cast

from arq import cron
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function, func

from app.executions.engine import WorkerContext, run_execution
from app.executions.jobs import RUN_EXECUTION
from app.executions.recovery import sweep

log = logging.getLogger(__name__)


async def sweep_executions(ctx: WorkerContext) -> dict[str, int]:
    report = await sweep(ctx["db"], ctx["redis"], ctx["settings"])
    if report.recovered or report.failed or report.requeued or report.woken:
        log.info("sweep: %s", report)
    return report.__dict__


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
        )
    ]


def cron_jobs(interval_seconds: int) -> list[CronJob]:
    seconds = set(range(0, 60, max(1, min(interval_seconds, 60))))
    return [
        cron(
            cast(WorkerCoroutine, sweep_executions),
            second=seconds,
            run_at_startup=True,
            unique=True,
        )
    ]
