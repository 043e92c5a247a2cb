"""Worker resources: created once per process and shared by every queue's arq worker."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import httpx

from app.agents.sandbox import open_sandbox
from app.config import Settings
from app.db import create_engine
from app.executions.engine import WorkerContext
from app.executions.interrupts import RunningChunks
from app.undumpable import make_undumpable


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def open_context(settings: Settings, concurrency: int) -> dict[str, Any]:
    """Engine (autocommit: each worker statement is its own transaction), HTTP client, settings,
    and the sandbox bash commands run in (raises SandboxStartError if it is required and cannot
    start).

    The pool holds a connection for every job that can run at once (``concurrency``): connections
    beyond the pool size are closed when returned, and opening PostgreSQL connections per step
    costs more than the step.
    """
    assert settings.database_url, "database_url must be resolved before workers start"
    # The environment holds the database URL and provider keys.
    make_undumpable()
    sandbox = await asyncio.to_thread(open_sandbox, settings.sandbox, settings.workspace_base)
    pool_size = max(settings.db_pool_size, concurrency)
    # No pre-ping: it would cost a round trip per step; a dead connection is a transient error.
    db = create_engine(
        settings.database_url, pool_size=pool_size, pre_ping=False
    ).execution_options(isolation_level="AUTOCOMMIT")
    return {
        "settings": settings,
        "db": db,
        "http": httpx.AsyncClient(),
        "worker_id": worker_id(),
        "running": RunningChunks(),
        "sandbox": sandbox,
    }


async def close_context(ctx: dict[str, Any] | WorkerContext) -> None:
    await ctx["http"].aclose()
    await ctx["db"].dispose()
