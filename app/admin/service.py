"""The admin views: every user's executions with their owners, and any execution's logs."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.admin import repository
from app.admin.repository import ExecutionWithOwner
from app.errors import ExecutionNotFound
from app.executions import service
from app.executions.models import Execution, ExecutionLog


async def list_executions(
    session: AsyncSession,
    *,
    status: str | None,
    user_id: int | None,
    agent_type: str | None,
    page: int,
    per_page: int,
) -> tuple[list[ExecutionWithOwner], int]:
    return await repository.list_executions(
        session, status=status, user_id=user_id, agent_type=agent_type, page=page,
        per_page=per_page,
    )  # fmt: skip


async def view_execution(
    session: AsyncSession, execution_id: uuid.UUID, *, latest_logs: int
) -> tuple[ExecutionWithOwner, list[ExecutionLog], list[Execution]]:
    """Any execution with its owner, its latest logs and its subagents; 404 if none."""
    found = await repository.get_execution(session, execution_id)
    if found is None:
        raise ExecutionNotFound(f"No execution {execution_id}.")
    view = await service.view_execution(session, found.execution, latest_logs=latest_logs)
    return found, view.logs, view.children


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
    """A page of any execution's logs and how many match; 404 if there is no such execution."""
    if not await repository.execution_exists(session, execution_id):
        raise ExecutionNotFound(f"No execution {execution_id}.")
    return await repository.list_logs(
        session, execution_id, after_id=after_id, level=level, event_type=event_type, page=page,
        per_page=per_page,
    )  # fmt: skip
