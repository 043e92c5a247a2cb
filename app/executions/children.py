"""Subagents as real executions: starting children, waking the parent when the last one
finishes, and cancelling a parent's unfinished descendants with it."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.expression import bindparam

from app.config import SUBAGENT_PREFIX, Settings
from app.executions import events
from app.executions.interrupts import control_channel
from app.executions.jobs import enqueue_chunk
from app.executions.status import TERMINAL, Status

log = logging.getLogger(__name__)

_TERMINAL_SQL = ", ".join(f"'{s}'" for s in sorted(TERMINAL))
_TRUNCATED = "\n[... truncated ...]"

_LOCK_PARENT = text(
    "SELECT agent_type, status FROM agent_executions WHERE id = :id FOR UPDATE"
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_CHILDREN = text(
    """
    SELECT id, agent_type, status, output, error FROM agent_executions
    WHERE parent_id = :id ORDER BY created_at, id
    """
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_WAKE = text(
    """
    WITH parent AS (
        UPDATE agent_executions
        SET status = 'pending', wait = NULL, updated_at = now(),
            state_snapshot = state_snapshot
                             || '{"stop_reason": null, "pending_subagents": []}'::jsonb
        WHERE id = :id AND status = 'awaiting_event'
        RETURNING id, user_id, lease, queue, step_count, token_usage
    ), message AS (
        INSERT INTO agent_messages (execution_id, seq, message)
        SELECT id, (SELECT count(*) FROM agent_messages WHERE execution_id = :id), :message
        FROM parent
    ), change_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'subagents_finished', 'Status changed to pending',
               jsonb_build_object('from', 'awaiting_event', 'to', 'pending',
                                  'step_count', step_count, 'token_usage', token_usage)
        FROM parent
        RETURNING id
    )
    SELECT parent.*, change_log.id AS log_id FROM parent, change_log
    """
).bindparams(bindparam("id", type_=UUID(as_uuid=True)), bindparam("message", type_=JSONB))

_CANCEL_DESCENDANTS = text(
    f"""
    WITH RECURSIVE tree AS (
        SELECT id FROM agent_executions WHERE parent_id = :id
        UNION ALL
        SELECT c.id FROM agent_executions c JOIN tree ON c.parent_id = tree.id
    ), cancelled AS (
        UPDATE agent_executions
        SET status = 'cancelled', lease = lease + 1, completed_at = now(), updated_at = now(),
            worker_id = NULL
        WHERE id IN (SELECT id FROM tree) AND status NOT IN ({_TERMINAL_SQL})
        RETURNING id, user_id, status, step_count, token_usage, completed_at
    ), change_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', 'cancelled', 'Cancelled with its parent',
               jsonb_build_object('to', 'cancelled', 'reason', 'parent',
                                  'step_count', step_count, 'token_usage', token_usage)
        FROM cancelled
        RETURNING id, execution_id
    )
    SELECT cancelled.*, change_log.id AS log_id
    FROM cancelled JOIN change_log ON change_log.execution_id = cancelled.id
    """
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_WAITING_PARENTS = text(
    f"""
    SELECT p.id FROM agent_executions p
    WHERE p.status = 'awaiting_event' AND p.wait ? 'children'
      AND NOT EXISTS (
          SELECT 1 FROM agent_executions c
          WHERE c.parent_id = p.id AND c.status NOT IN ({_TERMINAL_SQL}))
    LIMIT 500
    """
)


def child_rows(settings: Settings, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The executions to create for ``spawn_subagents`` tasks ({subagent, prompt})."""
    rows = []
    for task in tasks:
        spec = settings.subagents[task["subagent"]]
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "agent_type": SUBAGENT_PREFIX + task["subagent"],
                "queue": spec.queue,
                "input": {"prompt": task["prompt"]},
            }
        )
    return rows


async def start_children(redis: ArqRedis, children: list[dict[str, Any]]) -> None:
    """Queue the first job of each new child (committed already; the sweep covers failures)."""
    for child in children:
        try:
            await enqueue_chunk(redis, child["id"], 0, child["queue"])
        except Exception:
            log.warning("could not enqueue child %s", child["id"], exc_info=True)


def results_message(children: list[Any], settings: Settings, limit: int) -> dict[str, Any]:
    """The user message that hands the children's results to the parent."""
    parts = [f"Results of the {len(children)} subagent(s):"]
    for number, child in enumerate(children, start=1):
        name = str(child.agent_type).removeprefix(SUBAGENT_PREFIX)
        if child.status == Status.COMPLETED:
            body = str((child.output or {}).get("response", ""))
        else:
            body = str((child.error or {}).get("message", "no result"))
        if len(body) > limit:
            body = body[:limit] + _TRUNCATED
        parts.append(f"## {number}. {name} ({child.status})\n{body}")
    return {"role": "user", "content": "\n\n".join(parts)}


async def wake_parent(
    db: AsyncEngine, redis: ArqRedis, settings: Settings, parent_id: uuid.UUID
) -> bool:
    """Resume ``parent_id`` if it waits for children and all of them have finished.

    Run after each child's terminal write: the parent row lock serialises siblings finishing
    together, and the last one to commit sees every sibling finished.
    """
    async with db.execution_options(isolation_level="READ COMMITTED").begin() as conn:
        parent = (await conn.execute(_LOCK_PARENT, {"id": parent_id})).first()
        if parent is None or parent.status != Status.AWAITING_EVENT:
            return False
        children = (await conn.execute(_CHILDREN, {"id": parent_id})).all()
        if any(child.status not in TERMINAL for child in children):
            return False
        spec = settings.spec_for(parent.agent_type)
        limit = spec.summary_max_chars if spec else 12_000
        message = results_message(list(children), settings, limit)
        woken = (await conn.execute(_WAKE, {"id": parent_id, "message": message})).first()
    if woken is None:
        return False
    try:
        await enqueue_chunk(redis, woken.id, woken.lease, woken.queue)
        event = events.status_changed(
            woken.id, woken.log_id, Status.PENDING, step_count=woken.step_count,
            token_usage=woken.token_usage, completed_at=None,
        )  # fmt: skip
        await events.publish(redis, woken.id, woken.user_id, [event])
    except Exception:
        log.warning("could not enqueue parent %s", parent_id, exc_info=True)
    return True


async def cancel_descendants(
    conn: AsyncConnection | AsyncSession, execution_id: uuid.UUID
) -> list[Any]:
    """Cancel every unfinished execution below ``execution_id`` (lease bumped); returns them."""
    return list((await conn.execute(_CANCEL_DESCENDANTS, {"id": execution_id})).all())


async def announce_cancelled(redis: ArqRedis, rows: list[Any]) -> None:
    """Stop their running chunks and tell subscribers, after the cancel committed."""
    for row in rows:
        try:
            await redis.publish(control_channel(row.id), json.dumps({"signal": "cancel"}))
            event = events.status_changed(
                row.id, row.log_id, Status.CANCELLED, step_count=row.step_count,
                token_usage=row.token_usage, completed_at=row.completed_at,
            )  # fmt: skip
            await events.publish(redis, row.id, row.user_id, [event])
        except Exception:
            log.warning("could not announce the cancel of %s", row.id, exc_info=True)


async def wake_waiting_parents(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> int:
    """For the sweep: parents whose children all finished but were never woken."""
    async with db.connect() as conn:
        waiting = [row.id for row in (await conn.execute(_WAITING_PARENTS)).all()]
    woken = 0
    for parent_id in waiting:
        if await wake_parent(db, redis, settings, parent_id):
            woken += 1
    return woken
