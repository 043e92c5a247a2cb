"""Worker resources: created once per process and shared by every queue's arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import httpx

from app.agents.drivers.clients import ModelHttpClient, shared_tls_context
from app.agents.sandbox import open_sandbox
from app.config import Settings
from app.db import create_driver_pool, create_engine, driver_connection
from app.executions.heartbeat import Heartbeat
from app.executions.interrupts import RunningChunks
from app.undumpable import make_undumpable


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def open_context(settings: Settings) -> dict[str, Any]:
    """Engine (autocommit: each worker statement is its own transaction), HTTP client, settings,
    the sandbox bash commands run in (raises SandboxStartError if it is required and cannot
    start), and the process's heartbeat (running until :func:`close_context`).

    Jobs hold a database connection only while they write, so the pool does not grow with the
    ``concurrency`` of jobs: ``worker.db_pool_size`` connections at most, kept open (opening
    one per step would cost more than the step); a step waits for one when all are busy.
    """
    assert settings.database_url, "database_url must be resolved before workers start"
    # The environment holds the database URL and provider keys.
    make_undumpable()
    sandbox = await asyncio.to_thread(open_sandbox, settings.sandbox, settings.workspace_base)
    tuning = settings.worker
    steps_size, other_size = split_pool(tuning.db_pool_size)
    # The per-step statements (claim, step, heartbeat) go straight to an asyncpg pool.
    pg = await create_driver_pool(settings.database_url, size=steps_size)
    # The rest (spawns, failures, sweeps, schedules, webhooks) through SQLAlchemy. No pre-ping:
    # it would cost a round trip per use; a dead connection is a transient error.
    db = create_engine(
        settings.database_url,
        pool_size=other_size,
        max_overflow=0,
        pool_timeout=tuning.db_pool_timeout,
        pre_ping=False,
    ).execution_options(isolation_level="AUTOCOMMIT")
    heartbeat = Heartbeat(lambda: driver_connection(pg, tuning.db_pool_timeout), tuning)
    return {
        "settings": settings,
        "db": db,
        "pg": pg,
        "http": httpx.AsyncClient(verify=shared_tls_context()),
        "models": ModelHttpClient(
            tuning.http_max_connections,
            max_connections_per_host=tuning.http_max_connections_per_host,
        ),
        "worker_id": worker_id(),
        "running": RunningChunks(),
        "sandbox": sandbox,
        "heartbeat": heartbeat,
        "db_slots": asyncio.Semaphore(steps_size),
        "draining": asyncio.Event(),
        "heartbeat_task": asyncio.create_task(heartbeat.run()),
    }


async def close_context(ctx: dict[str, Any]) -> None:
    task: asyncio.Task[None] = ctx["heartbeat_task"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx["http"].aclose()
    await ctx["models"].aclose()
    await ctx["db"].dispose()
    await ctx["pg"].close()


def split_pool(size: int) -> tuple[int, int]:
    """``worker.db_pool_size`` shared out: the step statements' pool and SQLAlchemy's (a
    quarter, 2 to 4 connections, for the rest: spawns, failures, sweeps, webhook deliveries),
    at least one for the steps."""
    other = min(4, max(2, size // 4))
    return max(1, size - other), other
