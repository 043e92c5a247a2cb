from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from app.auth.dependencies import CurrentUser
from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import (
    Conflict,
    ExecutionNotFound,
    InvalidRequest,
    RateLimited,
    Unauthorized,
    UnknownAgentType,
)
from app.executions import service
from app.executions.control import IllegalTransition, apply_signal
from app.executions.schemas import (
    ChildSummary,
    ControlResponse,
    ConversationMessage,
    ExecutionDetail,
    ExecutionOut,
    ExecutionPage,
    LogEntry,
    SendInput,
    StartedExecution,
    StartExecution,
)
from app.executions.transitions import Signal, Status
from app.outbound import service as outbound
from app.outbound.schemas import SubscriptionCreated, SubscriptionOut

router = APIRouter(prefix="/api/agents", tags=["executions"])

_AUTH: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi()}
_LATEST_LOGS = 50
_NAME = r"^[a-z_]+$"


def _after(delay_seconds: float | None) -> datetime | None:
    if delay_seconds is None:
        return None
    return datetime.now(UTC) + timedelta(seconds=delay_seconds)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StartedExecution,
    operation_id="startExecution",
    summary="Start an agent execution",
    responses={
        **_AUTH,
        **UnknownAgentType.openapi(),
        **InvalidRequest.openapi(),
        **RateLimited.openapi(),
        **Conflict.openapi(),
    },
)
async def start_execution(
    body: StartExecution,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    redis: RedisDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Sent again with the same body within 24 h, the first response is "
            "replayed (with `Idempotent-Replayed: true`) and nothing new is started.",
        ),
    ] = None,
) -> StartedExecution:
    if idempotency_key is not None:
        replayed = await service.replayed_start(
            session, user, idempotency_key, body.model_dump(mode="json")
        )
        if replayed is not None:
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Location"] = f"/api/agents/{replayed['id']}"
            return StartedExecution.model_validate(replayed)
    execution = await service.start_execution(
        session,
        redis,
        settings,
        user,
        body.agent_type,
        body.input.model_dump(),
        body.metadata,
        body.await_event,
        body.run_at or _after(body.delay_seconds),
        queue=body.queue,
        estimated_steps=body.estimated_steps,
    )
    started = StartedExecution.model_validate(execution)
    if body.webhook is not None:
        created = await outbound.create_subscription(
            session,
            settings,
            user,
            url=body.webhook.url,
            events=list(body.webhook.events),
            execution_id=execution.id,
        )
        out = SubscriptionOut.model_validate(created.subscription).model_dump()
        started.webhook = SubscriptionCreated(**out, secret=created.secret)
    response.headers["Location"] = f"/api/agents/{execution.id}"
    if idempotency_key is not None:
        await service.remember_start(
            session, user, idempotency_key, started.model_dump(mode="json")
        )
    return started


@router.get(
    "",
    response_model=ExecutionPage,
    operation_id="listExecutions",
    summary="List your executions, newest first",
    responses=_AUTH,
)
async def list_executions(
    user: CurrentUser,
    session: SessionDep,
    status: Status | None = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ExecutionPage:
    items, total = await service.list_own_executions(
        session, user, status=status, page=page, per_page=per_page
    )
    return ExecutionPage(
        items=[ExecutionOut.model_validate(e) for e in items],
        total=total,
        page=page,
        per_page=per_page,
    )


@router.get(
    "/{execution_id}",
    response_model=ExecutionDetail,
    operation_id="getExecution",
    summary="One execution with its latest logs",
    responses={**_AUTH, **ExecutionNotFound.openapi()},
)
async def get_execution(
    execution_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> ExecutionDetail:
    execution = await service.get_visible_execution(session, user, execution_id)
    view = await service.view_execution(session, execution, latest_logs=_LATEST_LOGS)
    return ExecutionDetail.model_validate(
        {
            **ExecutionOut.model_validate(view.execution).model_dump(),
            "logs": [LogEntry.model_validate(entry) for entry in view.logs],
            "children": [ChildSummary.model_validate(child) for child in view.children],
        }
    )


@router.get(
    "/{execution_id}/logs",
    response_model=list[LogEntry],
    operation_id="listExecutionLogs",
    summary="Logs oldest first after a cursor, for polling clients",
    responses={**_AUTH, **ExecutionNotFound.openapi()},
)
async def list_execution_logs(
    execution_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    level: Annotated[str | None, Query(max_length=10, pattern=_NAME)] = None,
    event_type: Annotated[str | None, Query(max_length=50, pattern=_NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[LogEntry]:
    execution = await service.get_visible_execution(session, user, execution_id)
    logs = await service.list_logs(
        session, execution, after_id=after_id, level=level, event_type=event_type, limit=limit
    )
    return [LogEntry.model_validate(entry) for entry in logs]


@router.get(
    "/{execution_id}/messages",
    response_model=list[ConversationMessage],
    operation_id="listExecutionMessages",
    summary="The conversation with the model, in order after a cursor",
    responses={**_AUTH, **ExecutionNotFound.openapi()},
)
async def list_execution_messages(
    execution_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    after_seq: Annotated[int | None, Query(ge=-1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ConversationMessage]:
    execution = await service.get_visible_execution(session, user, execution_id)
    return await service.list_messages(session, execution, after_seq=after_seq, limit=limit)


def _control_route(signal: Signal, summary: str) -> Any:
    async def control(
        execution_id: uuid.UUID,
        user: CurrentUser,
        session: SessionDep,
        redis: RedisDep,
        settings: SettingsDep,
    ) -> ControlResponse:
        execution = await service.get_visible_execution(session, user, execution_id)
        outcome = await apply_signal(session, redis, settings, user, execution.id, signal)
        return ControlResponse(status=outcome.status, signal=signal, accepted=outcome.accepted)

    control.__name__ = f"{signal.value}_execution"
    control.__doc__ = summary
    return control


_CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_AUTH,
    **ExecutionNotFound.openapi(),
    **IllegalTransition.openapi(),
}

for _signal, _method, _path, _summary in (
    (Signal.PAUSE, "POST", "/{execution_id}/pause", "Pause at the next step boundary"),
    (Signal.RESUME, "POST", "/{execution_id}/resume", "Resume a paused execution"),
    (Signal.CANCEL, "POST", "/{execution_id}/cancel", "Cancel, interrupting a running step"),
    (Signal.KILL, "DELETE", "/{execution_id}", "Force kill: cancel now and fence the worker off"),
):
    router.add_api_route(
        _path,
        _control_route(_signal, _summary),
        methods=[_method],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=ControlResponse,
        operation_id=f"{_signal.value}Execution",
        summary=_summary,
        responses=_CONTROL_RESPONSES,
    )


@router.post(
    "/{execution_id}/input",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlResponse,
    operation_id="sendExecutionInput",
    summary="Answer the question of an execution awaiting input",
    responses=_CONTROL_RESPONSES,
)
async def send_input(
    execution_id: uuid.UUID,
    body: SendInput,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> ControlResponse:
    execution = await service.get_visible_execution(session, user, execution_id)
    outcome = await apply_signal(
        session, redis, settings, user, execution.id, Signal.INPUT, body.input.model_dump()
    )
    return ControlResponse(status=outcome.status, signal=Signal.INPUT, accepted=outcome.accepted)
