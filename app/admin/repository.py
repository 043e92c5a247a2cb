"""Queries behind the admin API: every user's executions, with their owner and log counts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.auth.models import User
from app.executions.models import Execution, ExecutionLog


@dataclass(frozen=True, slots=True)
class ExecutionWithOwner:
    execution: Execution
    user: User
    logs_count: int


def _with_owner(executions: Select[Execution]) -> Select[Execution, User, int]:
    """The executions ``executions`` selects (filtered, ordered and limited there), newest first,
    each with its owner and a count of its logs, in one statement. The page is picked first, so
    the count (a correlated subquery, an index scan of ``ix_agent_logs_execution_id_id``) runs
    once per row returned, never for rows skipped by OFFSET."""
    page = executions.subquery("page")
    execution = aliased(Execution, page)
    logs_count = (
        select(func.count())
        .select_from(ExecutionLog)
        .where(ExecutionLog.execution_id == execution.id)
        .scalar_subquery()
        .label("logs_count")
    )
    return (
        select(execution, User, logs_count)
        .join(User, User.id == execution.user_id)
        .order_by(execution.created_at.desc(), execution.id.desc())
    )


def _owned(row: Row[Execution, User, int]) -> ExecutionWithOwner:
    execution, user, logs_count = row
    return ExecutionWithOwner(execution, user, int(logs_count))


async def list_executions(
    session: AsyncSession,
    *,
    status: str | None,
    user_id: int | None,
    agent_type: str | None,
    page: int,
    per_page: int,
) -> tuple[list[ExecutionWithOwner], int]:
    """A page of every user's executions, newest first, and how many match in all: one query
    for the page, one for the total."""
    where: list[ColumnElement[bool]] = []
    if status is not None:
        where.append(Execution.status == status)
    if user_id is not None:
        where.append(Execution.user_id == user_id)
    if agent_type is not None:
        where.append(Execution.agent_type == agent_type)
    total = await session.scalar(select(func.count()).select_from(Execution).where(*where))
    rows = await session.execute(
        _with_owner(
            select(Execution)
            .where(*where)
            .order_by(Execution.created_at.desc(), Execution.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )
    return [_owned(row) for row in rows], int(total or 0)


async def get_execution(
    session: AsyncSession, execution_id: uuid.UUID
) -> ExecutionWithOwner | None:
    query = _with_owner(select(Execution).where(Execution.id == execution_id))
    row = (await session.execute(query)).first()
    return None if row is None else _owned(row)


async def execution_exists(session: AsyncSession, execution_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Execution.id).where(Execution.id == execution_id))
    return found is not None


async def list_logs(
    session: AsyncSession,
    execution_id: uuid.UUID,
    *,
    after_id: int | None,
    level: str | None,
    event_type: str | None,
    page: int,
    per_page: int,
) -> tuple[list[ExecutionLog], int]:
    """A page of an execution's logs oldest first after the ``after_id`` cursor, and how many
    match the cursor and filters in all."""
    where: list[ColumnElement[bool]] = [ExecutionLog.execution_id == execution_id]
    if after_id is not None:
        where.append(ExecutionLog.id > after_id)
    if level is not None:
        where.append(ExecutionLog.level == level)
    if event_type is not None:
        where.append(ExecutionLog.event_type == event_type)
    total = await session.scalar(select(func.count()).select_from(ExecutionLog).where(*where))
    rows = await session.scalars(
        select(ExecutionLog)
        .where(*where)
        .order_by(ExecutionLog.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return list(rows), int(total or 0)
