"""Admin routes: every user's executions and their logs, and the queues, for operators."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.admin import service
from app.admin.queue_history import QueuesHistory, queue_history
from app.admin.queues import MAX_HISTORY_MINUTES, QueuesView, queues_view
from app.admin.repository import ExecutionWithOwner
from app.admin.schemas import (
    AdminExecution,
    AdminExecutionDetail,
    AdminExecutionPage,
    AdminLogPage,
    ExecutionOwner,
)
from app.auth.dependencies import AdminUser
from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import ExecutionNotFound, Forbidden, InvalidRequest, Unauthorized
from app.executions.schemas import ChildSummary, ExecutionOut, LogEntry
from app.executions.transitions import Status

router = APIRouter(prefix="/api/admin", tags=["admin"])

_ADMIN: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi(), **Forbidden.openapi()}
_EXECUTIONS_PER_PAGE = 50
_LOGS_PER_PAGE = 100
_LATEST_LOGS = 500
_NAME = r"^[a-z_]+$"
# Agent type names are free-form (``code-review``, ``subagent:deep-research``); refuse only
# control characters, which no name has and PostgreSQL cannot compare (NUL).
_AGENT_TYPE = r"^[^\x00-\x1f\x7f]+$"

Page = Annotated[int, Query(ge=1, le=1_000_000)]


def _admin_execution(found: ExecutionWithOwner) -> dict[str, Any]:
    return {
        **ExecutionOut.model_validate(found.execution).model_dump(),
        "user": ExecutionOwner.model_validate(found.user),
        "logs_count": found.logs_count,
    }


@router.get(
    "/agents",
    response_model=AdminExecutionPage,
    operation_id="adminListExecutions",
    summary="List every user's executions, newest first, 50 per page",
    responses=_ADMIN,
)
async def list_executions(
    admin: AdminUser,
    session: SessionDep,
    status: Status | None = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    agent_type: Annotated[
        str | None, Query(min_length=1, max_length=100, pattern=_AGENT_TYPE)
    ] = None,
    page: Page = 1,
) -> AdminExecutionPage:
    items, total = await service.list_executions(
        session,
        status=status,
        user_id=user_id,
        agent_type=agent_type,
        page=page,
        per_page=_EXECUTIONS_PER_PAGE,
    )
    return AdminExecutionPage(
        items=[AdminExecution.model_validate(_admin_execution(found)) for found in items],
        total=total,
        page=page,
        per_page=_EXECUTIONS_PER_PAGE,
    )


@router.get(
    "/agents/{execution_id}",
    response_model=AdminExecutionDetail,
    operation_id="adminGetExecution",
    summary="Any execution with its owner, children and latest 500 logs",
    responses={**_ADMIN, **ExecutionNotFound.openapi()},
)
async def get_execution(
    execution_id: uuid.UUID, admin: AdminUser, session: SessionDep
) -> AdminExecutionDetail:
    found, logs, children = await service.view_execution(
        session, execution_id, latest_logs=_LATEST_LOGS
    )
    return AdminExecutionDetail.model_validate(
        {
            **_admin_execution(found),
            "logs": [LogEntry.model_validate(entry) for entry in logs],
            "children": [ChildSummary.model_validate(child) for child in children],
        }
    )


@router.get(
    "/agents/{execution_id}/logs",
    response_model=AdminLogPage,
    operation_id="adminListExecutionLogs",
    summary="Any execution's logs oldest first after a cursor, 100 per page",
    responses={**_ADMIN, **ExecutionNotFound.openapi()},
)
async def list_execution_logs(
    execution_id: uuid.UUID,
    admin: AdminUser,
    session: SessionDep,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    level: Annotated[str | None, Query(max_length=10, pattern=_NAME)] = None,
    event_type: Annotated[str | None, Query(max_length=50, pattern=_NAME)] = None,
    page: Page = 1,
) -> AdminLogPage:
    items, total = await service.list_logs(
        session,
        execution_id,
        after_id=after_id,
        level=level,
        event_type=event_type,
        page=page,
        per_page=_LOGS_PER_PAGE,
    )
    return AdminLogPage(
        items=[LogEntry.model_validate(entry) for entry in items],
        total=total,
        page=page,
        per_page=_LOGS_PER_PAGE,
    )


@router.get(
    "/queues",
    response_model=QueuesView,
    operation_id="adminQueues",
    summary="Per queue: queued, running, awaiting, throughput, wait and run times; live workers",
    responses=_ADMIN,
)
async def admin_queues(
    _: AdminUser, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> QueuesView:
    return await queues_view(session, redis, settings)


@router.get(
    "/queues/history",
    response_model=QueuesHistory,
    operation_id="adminQueueHistory",
    summary="Per queue and minute: sampled depth, started, completed, failed, wait mean and p95",
    responses={**_ADMIN, **InvalidRequest.openapi()},
)
async def admin_queue_history(
    _: AdminUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
    minutes: Annotated[
        int,
        Query(
            ge=5, le=MAX_HISTORY_MINUTES, description="How far back, the current minute included."
        ),
    ] = 60,
) -> QueuesHistory:
    return await queue_history(session, redis, settings, minutes)
