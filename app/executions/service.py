"""The executions service: starting executions and reading them back, for the routers, the
progress streams and the dashboard socket. An execution is visible to its owner and to admins;
to anybody else it does not exist (404, not 403)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.errors import MissingApiKey
from app.agents.registry import check_agent_type, offered_tools
from app.auth.models import User
from app.config import Settings
from app.errors import (
    Conflict,
    ExecutionNotFound,
    IdempotencyKeyReused,
    InvalidRequest,
    UnknownAgentType,
)
from app.executions import repository
from app.executions.effects import after_commit_effects
from app.executions.limits import check_start_allowed
from app.executions.models import Execution, ExecutionLog
from app.executions.routing import choose_queue
from app.executions.schemas import AgentTypeOut, AwaitEvent, ConversationMessage

IDEMPOTENCY_KEEP_SECONDS = 24 * 3600


def request_fingerprint(body: dict[str, Any]) -> str:
    """A hash of a request body that equal JSON values share, whatever their formatting."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def replayed_start(
    session: AsyncSession, user: User, key: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """The response of the start that ``key`` was first sent with (the same ``body``), or None:
    the key is now taken for this request. A key sent again with another body is refused."""
    fingerprint = request_fingerprint(body)
    stored = await repository.claim_idempotency_key(
        session, user.id, key, fingerprint, IDEMPOTENCY_KEEP_SECONDS
    )
    if stored is None:
        return None
    if stored.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            f"The Idempotency-Key {key!r} was used in the last 24 hours with another request."
        )
    if stored.response is None:
        raise Conflict(f"A request with the Idempotency-Key {key!r} is still being processed.")
    return stored.response


async def remember_start(
    session: AsyncSession, user: User, key: str, response: dict[str, Any]
) -> None:
    """Keep the response of a start made with ``key``, to replay it."""
    await repository.record_idempotent_response(session, user.id, key, response)


def agent_types(settings: Settings) -> list[AgentTypeOut]:
    """The agent types, in name order, with what they can do and whether they can run."""
    keys = settings.provider_keys()
    types = []
    for name, spec in sorted(settings.agent_types.items()):
        problem = None
        try:
            check_agent_type(spec, keys)
        except MissingApiKey as exc:
            problem = str(exc)
        types.append(
            AgentTypeOut(
                name=name,
                description=spec.description,
                provider=spec.provider,
                model=spec.model,
                capabilities=list(spec.capabilities),
                tools=offered_tools(spec),
                subagents=list(spec.subagents),
                queue=spec.queue,
                max_steps=spec.max_steps,
                max_tokens=spec.max_tokens,
                timeout_seconds=spec.timeout,
                available=problem is None,
                unavailable=problem,
            )
        )
    return types


async def start_execution(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    user: User,
    agent_type: str,
    input: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    await_event: AwaitEvent | None = None,
    run_at: datetime | None = None,
    queue: str | None = None,
    estimated_steps: int | None = None,
) -> Execution:
    """Record a pending execution (its first job is enqueued once the row is committed); with
    ``await_event`` one that waits for that event first; with ``run_at`` (in the future) one
    scheduled to start then. Its queue comes from the routing rules (``queue`` is a request
    the user's tier must allow; ``estimated_steps`` may send it to the long queue)."""
    spec = settings.agent_types.get(agent_type)
    if spec is None:
        known = sorted(settings.agent_types)
        raise UnknownAgentType(
            f"Unknown agent type {agent_type!r}; known types: {', '.join(known)}.",
            known_agent_types=known,
        )
    try:
        check_agent_type(spec, settings.provider_keys())
    except MissingApiKey as exc:
        raise InvalidRequest(
            f"Agent type {agent_type!r} cannot run: {exc}", missing_setting=spec.api_key_env
        ) from exc
    if run_at is not None:
        horizon = timedelta(days=settings.scheduling.horizon_days)
        if run_at > datetime.now(UTC) + horizon:
            raise InvalidRequest(
                f"run_at is more than {settings.scheduling.horizon_days:g} days ahead.",
                horizon_days=settings.scheduling.horizon_days,
            )
        if run_at <= datetime.now(UTC):
            run_at = None  # due already: it starts now
    chosen_queue, reason = choose_queue(
        settings,
        tier=user.tier,
        agent_type=agent_type,
        spec=spec,
        requested=queue,
        estimated_steps=estimated_steps,
    )
    await check_start_allowed(session, user.id, user.tier, settings.tier_limits(user.tier))
    wait = None
    if await_event is not None:
        # Kept in the input too: what the execution was asked to wait for, for good.
        input = {**input, "await_event": await_event.model_dump(exclude_none=True)}
        wait = {
            "event": await_event.event_type,
            "key": await_event.key,
            "timeout_seconds": min(
                await_event.timeout_seconds or spec.max_event_wait, spec.max_event_wait
            ),
        }
    created = await repository.insert_execution(
        session,
        user_id=user.id,
        agent_type=agent_type,
        queue=chosen_queue,
        queue_reason=reason,
        input=input,
        metadata=metadata or {},
        wait=wait,
        run_at=run_at,
    )
    after_commit_effects(session, redis, settings).announce(created.change)
    return created.execution


def _owner_filter(user: User) -> int | None:
    """Whose executions ``user`` may see: their own, or (admins) everybody's."""
    return None if user.is_admin else user.id


async def get_visible_execution(
    session: AsyncSession, user: User, execution_id: uuid.UUID
) -> Execution:
    """The execution if ``user`` owns it or is an admin; otherwise it does not exist for them."""
    execution = await repository.get_execution(session, execution_id, user_id=_owner_filter(user))
    if execution is None:
        raise ExecutionNotFound(f"No execution {execution_id}.")
    return execution


async def is_visible(session: AsyncSession, user: User, execution_id: uuid.UUID) -> bool:
    found = await repository.get_execution(session, execution_id, user_id=_owner_filter(user))
    return found is not None


async def get_any_execution(session: AsyncSession, execution_id: uuid.UUID) -> Execution:
    """Any execution (for admins); 404 when there is none."""
    execution = await repository.get_execution(session, execution_id)
    if execution is None:
        raise ExecutionNotFound(f"No execution {execution_id}.")
    return execution


async def read_execution(session: AsyncSession, execution_id: uuid.UUID) -> Execution | None:
    """The execution as it is now, even if the session read it before (streams re-read it)."""
    return await repository.reload_execution(session, execution_id)


async def list_own_executions(
    session: AsyncSession, user: User, *, status: str | None, page: int, per_page: int
) -> tuple[list[Execution], int]:
    return await repository.list_executions(
        session, user_id=user.id, status=status, page=page, per_page=per_page
    )


@dataclass(frozen=True, slots=True)
class ExecutionView:
    """An execution with its latest logs and its subagents."""

    execution: Execution
    logs: list[ExecutionLog]
    children: list[Execution]


async def view_execution(
    session: AsyncSession, execution: Execution, *, latest_logs: int
) -> ExecutionView:
    logs = await repository.latest_logs(session, execution.id, latest_logs)
    children = await repository.list_children(session, execution.id)
    return ExecutionView(execution, logs, children)


async def list_messages(
    session: AsyncSession, execution: Execution, *, after_seq: int | None, limit: int
) -> list[ConversationMessage]:
    rows = await repository.list_messages(session, execution.id, after_seq=after_seq, limit=limit)
    return [
        ConversationMessage.model_validate(
            {**row.message, "seq": row.seq, "created_at": row.created_at}
        )
        for row in rows
    ]


async def list_logs(
    session: AsyncSession,
    execution: Execution,
    *,
    after_id: int | None,
    level: str | None,
    event_type: str | None,
    limit: int,
) -> list[ExecutionLog]:
    return await repository.list_logs(
        session, execution.id, after_id=after_id, level=level, event_type=event_type, limit=limit
    )
