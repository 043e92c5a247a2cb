"""SQL for executions. The worker's statements are written out by hand: each one is a single
round trip that does everything its moment needs (claim + load, or commit a whole step)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.executions.models import Execution, ExecutionLog

# --- worker statements -------------------------------------------------------------------------

_CLAIM = text(
    """
    WITH previous AS (
        SELECT id, status FROM agent_executions WHERE id = :id FOR UPDATE
    ), claimed AS (
        UPDATE agent_executions e
        SET status = 'running', lease = e.lease + 1, worker_id = :worker_id,
            heartbeat_at = now(), started_at = coalesce(e.started_at, now()),
            chunk_count = e.chunk_count + 1, updated_at = now()
        FROM previous
        WHERE e.id = previous.id AND e.lease = :expected_lease
          AND e.status IN ('pending', 'running')
        RETURNING e.id, e.user_id, e.agent_type, e.queue, e.input, e.state_snapshot, e.lease,
                  e.chunk_count, e.step_count, e.token_usage, previous.status AS previous_status
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Status changed to running',
               jsonb_build_object('from', previous_status, 'to', 'running')
        FROM claimed WHERE previous_status <> 'running'
        RETURNING id, created_at
    )
    SELECT claimed.*, status_log.id AS log_id,
           (SELECT coalesce(jsonb_agg(m.message ORDER BY m.seq), '[]'::jsonb)
              FROM agent_messages m WHERE m.execution_id = claimed.id) AS messages
    FROM claimed LEFT JOIN status_log ON true
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("worker_id", type_=String),
    bindparam("expected_lease", type_=Integer),
)

_COMMIT_STEP = text(
    """
    WITH execution AS (
        UPDATE agent_executions
        SET step_count = :step_count, token_usage = :token_usage, usage = :usage,
            state_snapshot = :snapshot, heartbeat_at = now(), updated_at = now(),
            status = coalesce(CAST(:finish_status AS varchar), status),
            output = coalesce(:output, output),
            completed_at = CASE WHEN :finish_status IS NULL THEN completed_at ELSE now() END
        WHERE id = :id AND lease = :lease AND status = 'running'
        RETURNING id, completed_at
    ), messages AS (
        INSERT INTO agent_messages (execution_id, seq, message)
        SELECT execution.id, :first_seq + m.ordinality - 1, m.value
        FROM execution, jsonb_array_elements(:messages) WITH ORDINALITY AS m(value, ordinality)
    ), step_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'step_completed', :log_message, :log_context FROM execution
        RETURNING id, created_at
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Status changed to ' || :finish_status,
               jsonb_build_object('from', 'running', 'to', CAST(:finish_status AS varchar))
        FROM execution WHERE :finish_status IS NOT NULL
        RETURNING id
    )
    SELECT step_log.id, step_log.created_at, status_log.id AS status_log_id,
           execution.completed_at
    FROM execution JOIN step_log ON true LEFT JOIN status_log ON true
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("step_count", type_=Integer),
    bindparam("token_usage", type_=Integer),
    bindparam("usage", type_=JSONB),
    bindparam("snapshot", type_=JSONB),
    bindparam("finish_status", type_=String),
    bindparam("output", type_=JSONB(none_as_null=True)),
    bindparam("first_seq", type_=Integer),
    bindparam("messages", type_=JSONB),
    bindparam("log_message", type_=String),
    bindparam("log_context", type_=JSONB),
)

_FINISH = text(
    """
    WITH execution AS (
        UPDATE agent_executions
        SET status = :status, error = :error, completed_at = now(), updated_at = now(),
            worker_id = NULL
        WHERE id = :id AND lease = :lease AND status = 'running'
        RETURNING id, step_count, token_usage, completed_at
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, :level, 'status_changed', :message,
               jsonb_build_object('from', 'running', 'to', CAST(:status AS varchar),
                                  'error', :error)
        FROM execution
        RETURNING id
    )
    SELECT status_log.id, execution.step_count, execution.token_usage, execution.completed_at
    FROM execution JOIN status_log ON true
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("lease", type_=Integer),
    bindparam("status", type_=String),
    bindparam("level", type_=String),
    bindparam("message", type_=String),
    bindparam("error", type_=JSONB(none_as_null=True)),
)

_HEARTBEAT = text(
    "UPDATE agent_executions SET heartbeat_at = now() "
    "WHERE id = :id AND lease = :lease AND status = 'running'"
).bindparams(bindparam("id", type_=UUID(as_uuid=True)), bindparam("lease", type_=Integer))


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker gets when it wins an execution: enough to rebuild the agent."""

    id: uuid.UUID
    user_id: int
    agent_type: str
    queue: str
    input: dict[str, Any]
    state_snapshot: dict[str, Any] | None
    messages: list[dict[str, Any]]
    lease: int
    chunk_count: int
    step_count: int
    token_usage: int
    status_log_id: int | None


@dataclass(frozen=True, slots=True)
class StepWritten:
    log_id: int
    created_at: datetime
    status_log_id: int | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Finished:
    log_id: int
    step_count: int
    token_usage: int
    completed_at: datetime


async def claim_execution(
    conn: AsyncConnection, execution_id: uuid.UUID, expected_lease: int, worker_id: str
) -> Claim | None:
    """Take the execution for this worker, bumping its lease; None if it is not ours to run."""
    row = (
        await conn.execute(
            _CLAIM, {"id": execution_id, "expected_lease": expected_lease, "worker_id": worker_id}
        )
    ).first()
    if row is None:
        return None
    return Claim(
        id=row.id,
        user_id=row.user_id,
        agent_type=row.agent_type,
        queue=row.queue,
        input=row.input,
        state_snapshot=row.state_snapshot,
        messages=row.messages,
        lease=row.lease,
        chunk_count=row.chunk_count,
        step_count=row.step_count,
        token_usage=row.token_usage,
        status_log_id=row.log_id,
    )


async def commit_step(
    conn: AsyncConnection,
    *,
    execution_id: uuid.UUID,
    lease: int,
    step_count: int,
    usage: dict[str, int],
    snapshot: dict[str, Any],
    first_seq: int,
    messages: list[dict[str, Any]],
    log_message: str,
    log_context: dict[str, Any],
    finish_status: str | None = None,
    output: dict[str, Any] | None = None,
) -> StepWritten | None:
    """Append a step's messages and log and advance progress in one statement, fenced by the
    lease; when ``finish_status`` is given the execution also ends with ``output``.
    None means the lease was lost and nothing was written."""
    row = (
        await conn.execute(
            _COMMIT_STEP,
            {
                "id": execution_id,
                "lease": lease,
                "step_count": step_count,
                "token_usage": usage["input_tokens"] + usage["output_tokens"],
                "usage": usage,
                "snapshot": snapshot,
                "finish_status": finish_status,
                "output": output,
                "first_seq": first_seq,
                "messages": messages,
                "log_message": log_message,
                "log_context": log_context,
            },
        )
    ).first()
    if row is None:
        return None
    return StepWritten(row.id, row.created_at, row.status_log_id, row.completed_at)


async def finish_execution(
    conn: AsyncConnection,
    *,
    execution_id: uuid.UUID,
    lease: int,
    status: str,
    message: str,
    error: dict[str, Any] | None = None,
) -> Finished | None:
    """End a running execution without a step (failure or limit); None if the lease was lost."""
    row = (
        await conn.execute(
            _FINISH,
            {
                "id": execution_id,
                "lease": lease,
                "status": status,
                "level": "error" if error else "info",
                "message": message,
                "error": error,
            },
        )
    ).first()
    if row is None:
        return None
    return Finished(row.id, row.step_count, row.token_usage, row.completed_at)


async def record_heartbeat(conn: AsyncConnection, execution_id: uuid.UUID, lease: int) -> bool:
    """Refresh the heartbeat; False when the lease is no longer ours."""
    result = await conn.execute(_HEARTBEAT, {"id": execution_id, "lease": lease})
    return bool(result.rowcount)


# --- API queries -------------------------------------------------------------------------------


async def insert_execution(
    session: AsyncSession,
    *,
    user_id: int,
    agent_type: str,
    queue: str,
    input: dict[str, Any],
    metadata: dict[str, Any],
) -> tuple[Execution, ExecutionLog]:
    """A new pending execution and its first ``status_changed`` log."""
    execution = Execution(
        id=uuid.uuid4(),
        user_id=user_id,
        agent_type=agent_type,
        queue=queue,
        input=input,
        metadata_=metadata,
        status="pending",
    )
    log = ExecutionLog(
        execution_id=execution.id,
        level="info",
        event_type="status_changed",
        message="Execution created",
        context={"from": None, "to": "pending"},
    )
    session.add_all([execution, log])
    await session.flush()
    return execution, log


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
