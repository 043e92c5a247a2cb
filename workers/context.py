"""Worker resources: created once per process and shared by every queue's arq worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

import httpx

from app.agents.drivers.clients import ShardedClient
from app.agents.sandbox import open_sandbox
from app.config import Settings
from app.db import create_engine
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
    # No pre-ping: it would cost a round trip per step; a dead connection is a transient error.
    db = create_engine(
        settings.database_url,
        pool_size=tuning.db_pool_size,
        max_overflow=0,
        pool_timeout=tuning.db_pool_timeout,
        pre_ping=False,
    ).execution_options(isolation_level="AUTOCOMMIT")
    heartbeat = Heartbeat(db, tuning)
    return {
        "settings": settings,
        "db": db,
        "http": httpx.AsyncClient(),
        "models": ShardedClient(tuning.http_max_connections),
        "worker_id": worker_id(),
        "running": RunningChunks(),
        "sandbox": sandbox,
        "heartbeat": heartbeat,
        "db_slots": asyncio.Semaphore(tuning.db_pool_size),
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
