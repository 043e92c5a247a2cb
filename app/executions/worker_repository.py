"""The worker's statements, written out by hand for the per-step hot path.

Each is a single round trip that does everything its moment needs (claim and load; commit a whole
step; finish). They run on the asyncpg connection under SQLAlchemy's pooled connection, in
autocommit, so a statement is its own transaction and costs no ORM or Core bookkeeping. jsonb
parameters are passed as JSON text and come back decoded (the dialect's jsonb codec).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncpg import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import json_serializer

_CLAIM = """
    WITH previous AS (
        SELECT id, status FROM agent_executions WHERE id = $1 FOR UPDATE
    ), claimed AS (
        UPDATE agent_executions e
        SET status = 'running', lease = e.lease + 1, worker_id = $3,
            heartbeat_at = now(), started_at = coalesce(e.started_at, now()),
            chunk_count = e.chunk_count + 1, updated_at = now()
        FROM previous
        WHERE e.id = previous.id AND e.lease = $2 AND e.status IN ('pending', 'running')
        RETURNING e.id, e.user_id, e.agent_type, e.queue, e.input, e.state_snapshot, e.lease,
                  e.chunk_count, e.step_count, e.token_usage, previous.status AS previous_status
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Status changed to running',
               jsonb_build_object('from', previous_status, 'to', 'running')
        FROM claimed WHERE previous_status <> 'running'
        RETURNING id
    )
    SELECT claimed.*, status_log.id AS log_id,
           (SELECT coalesce(jsonb_agg(m.message ORDER BY m.seq), '[]'::jsonb)
              FROM agent_messages m WHERE m.execution_id = claimed.id) AS messages
    FROM claimed LEFT JOIN status_log ON true
"""

# $1 id, $2 lease, $3 step_count, $4 token_usage, $5 usage, $6 snapshot, $7 finish status or
# NULL, $8 output or NULL, $9 first message seq, $10 messages (a JSON array), $11 log message,
# $12 log context
_COMMIT_STEP = """
    WITH execution AS (
        UPDATE agent_executions
        SET step_count = $3, token_usage = $4, usage = $5::jsonb, state_snapshot = $6::jsonb,
            heartbeat_at = now(), updated_at = now(),
            status = coalesce($7::varchar, status),
            output = coalesce($8::jsonb, output),
            completed_at = CASE WHEN $7::varchar IS NULL THEN completed_at ELSE now() END
        WHERE id = $1 AND lease = $2 AND status = 'running'
        RETURNING id, completed_at
    ), messages AS (
        INSERT INTO agent_messages (execution_id, seq, message)
        SELECT execution.id, $9::int + m.ordinality - 1, m.value
        FROM execution, jsonb_array_elements($10::jsonb) WITH ORDINALITY AS m(value, ordinality)
    ), step_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'step_completed', $11, $12::jsonb FROM execution
        RETURNING id, created_at
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Status changed to ' || $7::varchar,
               jsonb_build_object('from', 'running', 'to', $7::varchar)
        FROM execution WHERE $7::varchar IS NOT NULL
        RETURNING id
    )
    SELECT step_log.id, step_log.created_at, status_log.id AS status_log_id,
           execution.completed_at
    FROM execution JOIN step_log ON true LEFT JOIN status_log ON true
"""

# $1 id, $2 lease, $3 status, $4 level, $5 message, $6 error
_FINISH = """
    WITH execution AS (
        UPDATE agent_executions
        SET status = $3, error = $6::jsonb, completed_at = now(), updated_at = now(),
            worker_id = NULL
        WHERE id = $1 AND lease = $2 AND status = 'running'
        RETURNING id, step_count, token_usage, completed_at
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, $4, 'status_changed', $5,
               jsonb_build_object('from', 'running', 'to', $3::varchar, 'error', $6::jsonb)
        FROM execution
        RETURNING id
    )
    SELECT status_log.id, execution.step_count, execution.token_usage, execution.completed_at
    FROM execution JOIN status_log ON true
"""

# Only the lease decides whether the worker still owns the execution: right after the final
# step committed (status completed) the heartbeat must not read as a lost lease.
_HEARTBEAT = """
    UPDATE agent_executions
    SET heartbeat_at = CASE WHEN status = 'running' THEN now() ELSE heartbeat_at END
    WHERE id = $1 AND lease = $2
"""


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


async def _driver(conn: AsyncConnection) -> Connection:
    raw = await conn.get_raw_connection()
    driver: Connection = raw.driver_connection
    return driver


async def claim_execution(
    conn: AsyncConnection, execution_id: uuid.UUID, expected_lease: int, worker_id: str
) -> Claim | None:
    """Take the execution for this worker, bumping its lease; None if it is not ours to run."""
    row = await (await _driver(conn)).fetchrow(_CLAIM, execution_id, expected_lease, worker_id)
    if row is None:
        return None
    return Claim(
        id=row["id"],
        user_id=row["user_id"],
        agent_type=row["agent_type"],
        queue=row["queue"],
        input=row["input"],
        state_snapshot=row["state_snapshot"],
        messages=row["messages"],
        lease=row["lease"],
        chunk_count=row["chunk_count"],
        step_count=row["step_count"],
        token_usage=row["token_usage"],
        status_log_id=row["log_id"],
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
    row = await (await _driver(conn)).fetchrow(
        _COMMIT_STEP,
        execution_id,
        lease,
        step_count,
        usage["input_tokens"] + usage["output_tokens"],
        json_serializer(usage),
        json_serializer(snapshot),
        finish_status,
        None if output is None else json_serializer(output),
        first_seq,
        json_serializer(messages),
        log_message,
        json_serializer(log_context),
    )
    if row is None:
        return None
    return StepWritten(row["id"], row["created_at"], row["status_log_id"], row["completed_at"])


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
    row = await (await _driver(conn)).fetchrow(
        _FINISH,
        execution_id,
        lease,
        status,
        "error" if error else "info",
        message,
        None if error is None else json_serializer(error),
    )
    if row is None:
        return None
    return Finished(row["id"], row["step_count"], row["token_usage"], row["completed_at"])


async def record_heartbeat(conn: AsyncConnection, execution_id: uuid.UUID, lease: int) -> bool:
    """Refresh the heartbeat; False when the lease is no longer ours."""
    status: str = await (await _driver(conn)).execute(_HEARTBEAT, execution_id, lease)
    return status != "UPDATE 0"
