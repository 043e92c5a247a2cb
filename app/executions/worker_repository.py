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

# A pause requested while no step was running (between chunks) takes effect at the claim: the
# execution parks instead of running.
_CLAIM = """
    WITH previous AS (
        SELECT id, status FROM agent_executions WHERE id = $1 FOR UPDATE
    ), pause AS (
        SELECT s.id FROM agent_signals s, previous
        WHERE s.execution_id = previous.id AND NOT s.processed AND s.signal_type = 'pause'
    ), claimed AS (
        UPDATE agent_executions e
        SET status = CASE WHEN EXISTS (SELECT 1 FROM pause) THEN 'paused' ELSE 'running' END,
            paused_at = CASE WHEN EXISTS (SELECT 1 FROM pause) THEN now() ELSE e.paused_at END,
            lease = e.lease + 1, worker_id = $3,
            heartbeat_at = now(), started_at = coalesce(e.started_at, now()),
            chunk_count = e.chunk_count + 1, updated_at = now()
        FROM previous
        WHERE e.id = previous.id AND e.lease = $2 AND e.status IN ('pending', 'running')
        RETURNING e.id, e.user_id, e.agent_type, e.queue, e.input, e.state_snapshot, e.lease,
                  e.chunk_count, e.step_count, e.token_usage, e.status, e.parent_id, e.depth,
                  previous.status AS previous_status
    ), consumed AS (
        UPDATE agent_signals SET processed = true, processed_at = now()
        WHERE id IN (SELECT id FROM pause) AND EXISTS (SELECT 1 FROM claimed)
    ), status_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info',
               CASE WHEN status = 'paused' THEN 'paused' ELSE 'status_changed' END,
               'Status changed to ' || status,
               jsonb_build_object('from', previous_status, 'to', status, 'worker', $3::text,
                                  'step_count', step_count, 'token_usage', token_usage)
        FROM claimed WHERE previous_status <> status
        RETURNING id
    )
    SELECT claimed.*, status_log.id AS log_id,
           (SELECT coalesce(jsonb_agg(m.message ORDER BY m.seq), '[]'::jsonb)
              FROM agent_messages m WHERE m.execution_id = claimed.id) AS messages
    FROM claimed LEFT JOIN status_log ON true
"""

# $1 id, $2 lease, $3 step_count, $4 token_usage, $5 usage, $6 snapshot, $7 status to end or park
# in (or NULL to keep running), $8 output or NULL, $9 first message seq, $10 messages (a JSON
# array), $11 log message, $12 log context, $13 metadata to merge or NULL, $14 child executions
# to start (a JSON array of {id, agent_type, queue, input}) or NULL.
# An unprocessed pause signal parks the execution at this step boundary (unless it ends here).
_COMMIT_STEP = """
    WITH pause AS (
        SELECT id FROM agent_signals
        WHERE execution_id = $1 AND NOT processed AND signal_type = 'pause'
    ), target AS (
        SELECT coalesce(
            $7::varchar,
            CASE WHEN EXISTS (SELECT 1 FROM pause) THEN 'paused' ELSE 'running' END
        ) AS status
    ), execution AS (
        UPDATE agent_executions
        SET step_count = $3, token_usage = $4, usage = $5::jsonb, state_snapshot = $6::jsonb,
            heartbeat_at = now(), updated_at = now(),
            status = target.status,
            output = coalesce($8::jsonb, output),
            metadata = CASE WHEN $13::jsonb IS NULL THEN metadata ELSE metadata || $13::jsonb END,
            wait = CASE WHEN $14::jsonb IS NULL THEN wait
                        ELSE jsonb_build_object('children', (
                            SELECT jsonb_agg(c -> 'id') FROM jsonb_array_elements($14::jsonb) c))
                   END,
            paused_at = CASE WHEN target.status = 'paused' THEN now() ELSE paused_at END,
            completed_at = CASE WHEN target.status IN ('completed', 'failed', 'cancelled')
                                THEN now() ELSE completed_at END,
            worker_id = CASE WHEN target.status = 'running' THEN worker_id END
        FROM target
        WHERE id = $1 AND lease = $2 AND agent_executions.status = 'running'
        RETURNING id, user_id, depth, agent_executions.status, completed_at
    ), children AS (
        INSERT INTO agent_executions
            (id, user_id, agent_type, queue, parent_id, depth, input, created_at)
        SELECT (c ->> 'id')::uuid, execution.user_id, c ->> 'agent_type', c ->> 'queue',
               execution.id, execution.depth + 1, c -> 'input',
               -- distinct creation times keep the children in the order they were asked for
               now() + n * interval '1 microsecond'
        FROM execution, jsonb_array_elements($14::jsonb) WITH ORDINALITY AS t(c, n)
        WHERE $14::jsonb IS NOT NULL
        RETURNING id
    ), children_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'status_changed', 'Execution created',
               '{"from": null, "to": "pending", "step_count": 0, "token_usage": 0}'::jsonb
        FROM children
    ), consumed AS (
        UPDATE agent_signals SET processed = true, processed_at = now()
        WHERE id IN (SELECT id FROM pause) AND EXISTS (SELECT 1 FROM execution)
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
        SELECT id, 'info',
               CASE WHEN status = 'paused' THEN 'paused' ELSE 'status_changed' END,
               'Status changed to ' || status,
               jsonb_build_object('from', 'running', 'to', status,
                                  'step_count', $3::int, 'token_usage', $4::int)
        FROM execution WHERE status <> 'running'
        RETURNING id
    )
    SELECT step_log.id, step_log.created_at, status_log.id AS status_log_id,
           execution.status, execution.completed_at
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
               jsonb_build_object('from', 'running', 'to', $3::varchar, 'error', $6::jsonb,
                                  'step_count', step_count, 'token_usage', token_usage)
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
    status: str
    parent_id: uuid.UUID | None
    depth: int
    status_log_id: int | None


@dataclass(frozen=True, slots=True)
class StepWritten:
    log_id: int
    created_at: datetime
    status: str
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
        status=row["status"],
        parent_id=row["parent_id"],
        depth=row["depth"],
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
    metadata: dict[str, Any] | None = None,
    children: list[dict[str, Any]] | None = None,
) -> StepWritten | None:
    """Append a step's messages and log and advance progress in one statement, fenced by the
    lease. ``finish_status`` ends (``completed``, with ``output``) or parks (``awaiting_input``,
    merging ``metadata``; ``awaiting_event`` waiting for ``children``, which are created in the
    same statement) the execution; a pending pause request parks it ``paused``.
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
        None if metadata is None else json_serializer(metadata),
        None if children is None else json_serializer(children),
    )
    if row is None:
        return None
    return StepWritten(
        row["id"], row["created_at"], row["status"], row["status_log_id"], row["completed_at"]
    )


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
