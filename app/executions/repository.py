"""Queries behind the executions API (the worker's statements are in worker_repository.py)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.executions.models import Execution, ExecutionLog

_INSERT_EXECUTION = text(
    """
    WITH execution AS (
        INSERT INTO agent_executions (id, user_id, agent_type, queue, input, metadata, status)
        VALUES (:id, :user_id, :agent_type, :queue, :input, :metadata, 'pending')
        RETURNING *
    ), created AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Execution created',
               '{"from": null, "to": "pending", "step_count": 0, "token_usage": 0}'::jsonb
        FROM execution
        RETURNING id
    )
    SELECT execution.*, created.id AS log_id FROM execution, created
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("input", type_=JSONB),
    bindparam("metadata", type_=JSONB),
)


async def insert_execution(
    session: AsyncSession,
    *,
    user_id: int,
    agent_type: str,
    queue: str,
    input: dict[str, Any],
    metadata: dict[str, Any],
) -> Row[Any]:
    """A new pending execution and its first ``status_changed`` log (``log_id``), in one
    statement: this is on every start's path."""
    result = await session.execute(
        _INSERT_EXECUTION,
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "agent_type": agent_type,
            "queue": queue,
            "input": input,
            "metadata": metadata,
        },
    )
    return result.one()


async def get_execution(
    session: AsyncSession, execution_id: uuid.UUID, *, user_id: int | None = None
) -> Execution | None:
    """One execution; with ``user_id``, only if that user owns it."""
    query = select(Execution).where(Execution.id == execution_id)
    if user_id is not None:
        query = query.where(Execution.user_id == user_id)
    execution: Execution | None = await session.scalar(query)
    return execution


async def list_executions(
    session: AsyncSession, *, user_id: int, status: str | None, page: int, per_page: int
) -> tuple[list[Execution], int]:
    """A page of a user's executions, newest first, and how many there are in all."""
    where = [Execution.user_id == user_id]
    if status is not None:
        where.append(Execution.status == status)
    total = await session.scalar(select(func.count()).select_from(Execution).where(*where))
    rows = await session.scalars(
        select(Execution)
        .where(*where)
        .order_by(Execution.created_at.desc(), Execution.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return list(rows), int(total or 0)


async def list_logs(
    session: AsyncSession,
    execution_id: uuid.UUID,
    *,
    after_id: int | None = None,
    level: str | None = None,
    event_type: str | None = None,
    limit: int = 100,
) -> list[ExecutionLog]:
    """Logs oldest first after the ``after_id`` cursor."""
    query = select(ExecutionLog).where(ExecutionLog.execution_id == execution_id)
    if after_id is not None:
        query = query.where(ExecutionLog.id > after_id)
    if level is not None:
        query = query.where(ExecutionLog.level == level)
    if event_type is not None:
        query = query.where(ExecutionLog.event_type == event_type)
    rows = await session.scalars(query.order_by(ExecutionLog.id).limit(limit))
    return list(rows)


async def latest_logs(
    session: AsyncSession, execution_id: uuid.UUID, limit: int
) -> list[ExecutionLog]:
    """The ``limit`` most recent logs, oldest first."""
    rows = await session.scalars(
        select(ExecutionLog)
        .where(ExecutionLog.execution_id == execution_id)
        .order_by(ExecutionLog.id.desc())
        .limit(limit)
    )
    return list(reversed(list(rows)))


async def list_children(session: AsyncSession, execution_id: uuid.UUID) -> list[Execution]:
    rows = await session.scalars(
        select(Execution)
        .where(Execution.parent_id == execution_id)
        .order_by(Execution.created_at, Execution.id)
    )
    return list(rows)
