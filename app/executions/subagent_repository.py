"""Statements between parents and their subagents: waking a parent with its children's
results, cancelling a parent's unfinished descendants, finding parents nobody woke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.executions.transitions import (
    CANCEL_WITH_PARENT,
    TERMINAL_SQL,
    WAKE,
    Signal,
    Status,
    StatusChange,
    StatusLog,
    change_status,
)

_LOCK_PARENT = text("SELECT status FROM agent_executions WHERE id = :id FOR UPDATE").bindparams(
    bindparam("id", type_=UUID(as_uuid=True))
)

_CHILDREN = text(
    """
    SELECT agent_type, status, output, error FROM agent_executions
    WHERE parent_id = :id ORDER BY created_at, id
    """
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

# The results wait, unprocessed, for the worker to hand them to the agent.
_WAKE = text(
    change_status(
        [WAKE],
        where="e.id = :id",
        sets="wait = NULL",
        after=[
            f"""delivery AS (
                INSERT INTO agent_signals (execution_id, signal_type, payload)
                SELECT id, '{Signal.SUBAGENT_RESULTS}', :results FROM changed
            )"""
        ],
    )
).bindparams(bindparam("id", type_=UUID(as_uuid=True)), bindparam("results", type_=JSONB))

_CANCEL_DESCENDANTS = text(
    change_status(
        [CANCEL_WITH_PARENT],
        recursive=True,
        before=[
            """tree AS (
                SELECT id FROM agent_executions WHERE parent_id = :id
                UNION ALL
                SELECT c.id FROM agent_executions c JOIN tree ON c.parent_id = tree.id
            )"""
        ],
        where="e.id IN (SELECT id FROM tree)",
        log=StatusLog(
            message="'Cancelled with its parent'", context="""'{"reason": "parent"}'::jsonb"""
        ),
    )
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))

_WAITING_PARENTS = text(
    f"""
    SELECT p.id FROM agent_executions p
    WHERE p.status = 'awaiting_event' AND p.wait ? 'children'
      AND NOT EXISTS (
          SELECT 1 FROM agent_executions c
          WHERE c.parent_id = p.id AND c.status NOT IN ({TERMINAL_SQL}))
    LIMIT 500
    """
)


@dataclass(frozen=True, slots=True)
class ChildResult:
    """How one subagent ended."""

    agent_type: str
    status: Status
    output: dict[str, Any] | None
    error: dict[str, Any] | None


async def lock_waiting_parent(conn: AsyncConnection, parent_id: uuid.UUID) -> bool:
    """Lock the parent's row; whether it is waiting (for its subagents)."""
    status = (await conn.execute(_LOCK_PARENT, {"id": parent_id})).scalar()
    return status == Status.AWAITING_EVENT


async def child_results(conn: AsyncConnection, parent_id: uuid.UUID) -> list[ChildResult]:
    """The parent's children in the order it asked for them."""
    rows = (await conn.execute(_CHILDREN, {"id": parent_id})).all()
    return [ChildResult(r.agent_type, Status(r.status), r.output, r.error) for r in rows]


async def wake(
    conn: AsyncConnection, parent_id: uuid.UUID, results: dict[str, Any]
) -> StatusChange | None:
    """Set the waiting parent ``pending`` with ``results`` to deliver; None if it is not waiting."""
    row = (await conn.execute(_WAKE, {"id": parent_id, "results": results})).first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def cancel_descendants(
    conn: AsyncConnection | AsyncSession, execution_id: uuid.UUID
) -> list[StatusChange]:
    """Cancel every unfinished execution below ``execution_id`` (their leases bumped)."""
    rows = (await conn.execute(_CANCEL_DESCENDANTS, {"id": execution_id})).all()
    return [StatusChange.from_row(row._mapping) for row in rows]


async def waiting_parents(conn: AsyncConnection) -> list[uuid.UUID]:
    """Parents waiting for subagents that have all finished (their wake was lost)."""
    return [row.id for row in (await conn.execute(_WAITING_PARENTS)).all()]
