from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket
from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from app.auth.dependencies import AdminUser, CurrentUser, bearer_token
from app.auth.models import User
from app.deps import SessionDep
from app.errors import BadRequest, ExecutionNotFound, Forbidden, Unauthorized
from app.executions import service
from app.streams.limits import Slot, TooManyStreams, Watch, take_slot, token_check
from app.streams.sse import execution_events
from app.streams.websocket import serve_dashboard_socket

router = APIRouter(tags=["streams"])

KEEP_ALIVE_SECONDS = 15

_STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Server-sent events: `step.completed`, `status.changed`, `log`, and a "
        "final `finished` `{status}` when the execution is terminal. Each event's id is its "
        "`agent_logs` id: reconnect with `Last-Event-ID` (or `after_id`) to resume.",
    },
    **BadRequest.openapi(),
    **TooManyStreams.openapi(),
    **Unauthorized.openapi(),
    **ExecutionNotFound.openapi(),
}


class ProgressStream(EventSourceResponse):
    """An EventSourceResponse without a per-send timeout scope.

    sse-starlette wraps every send in ``anyio.move_on_after`` even when no timeout is set; with
    a thousand clients per event that scope is a large part of the fan-out. Slow clients are
    cut off by their bounded queue instead (app.streams.sse).
    """

    slot: Slot | None = None
    """The user's live-connection slot: released when the response ends, however it ends
    (even if the stream never started)."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        await send(message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.slot is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.slot.release())


_MAX_EVENT_ID = 2**63 - 1


def _cursor(last_event_id: str | None, after_id: int | None) -> int:
    """Where the stream resumes: ``Last-Event-ID`` (an event id this service sent), else
    ``after_id``. Anything else in the header is a 400, not a guess."""
    if last_event_id is None or not last_event_id.strip():
        return after_id or 0
    value = last_event_id.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or int(value) > _MAX_EVENT_ID:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent.")
    return int(value)


async def _stream(
    request: Request, user: User, execution_id: uuid.UUID, after: int, *, admin: bool = False
) -> EventSourceResponse:
    state = request.app.state
    limits = state.settings.streams
    slot = await take_slot(state.redis, limits, user.id)
    if slot is None:
        raise TooManyStreams(
            f"You have {limits.max_per_user} live streams open; close one first.",
            headers={"Retry-After": "5"},
        )
    token = bearer_token(request.headers.get("authorization")) or ""
    still_allowed = token_check(state.sessions, token, admin=admin)

    def watch(end: Callable[[str], object]) -> Watch:
        return Watch(slot, still_allowed, limits, end)

    response = ProgressStream(
        execution_events(state.hub, state.sessions, execution_id, after, watch),
        ping=KEEP_ALIVE_SECONDS,
        # No per-send timeout (it costs a cancel scope per event); a client that stops reading
        # is cut off when its bounded queue overflows (see app.streams.sse).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.slot = slot
    return response


@router.get(
    "/api/agents/{execution_id}/events",
    operation_id="streamExecutionEvents",
    summary="Live progress of an execution (SSE), resumable",
    response_class=EventSourceResponse,
    responses=_STREAM_RESPONSES,
)
async def stream_execution_events(
    execution_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    execution = await service.get_visible_execution(session, user, execution_id)
    return await _stream(request, user, execution.id, _cursor(last_event_id, after_id))


@router.get(
    "/api/admin/agents/{execution_id}/stream",
    operation_id="adminStreamExecution",
    summary="Live progress of any execution (SSE), for admins",
    response_class=EventSourceResponse,
    responses={**_STREAM_RESPONSES, **Forbidden.openapi()},
)
async def admin_stream_execution(
    execution_id: uuid.UUID,
    request: Request,
    admin: AdminUser,
    session: SessionDep,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    execution = await service.get_any_execution(session, execution_id)
    after = _cursor(last_event_id, after_id)
    return await _stream(request, admin, execution.id, after, admin=True)


@router.websocket("/api/ws")
async def dashboard_socket(websocket: WebSocket) -> None:
    """Dashboard subscriptions; authenticate with the bearer token or ``?token=``."""
    state = websocket.app.state
    await serve_dashboard_socket(
        websocket, state.hub, state.sessions, state.redis, state.settings.streams
    )
