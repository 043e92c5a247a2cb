"""Steering executions: pause, resume, cancel, force kill and answering a question.

Every change is one conditional UPDATE from the table below, so two racing requests cannot both
win, and an illegal request changes nothing (409 with the current status). A pause of a running
execution is a request: a signal row the worker consumes at its next step boundary. Cancel and
kill take effect at once and bump the lease, so the worker (even a hung one) can never write
again; the worker hears about it on the execution's control channel and interrupts the step.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import BigInteger, Integer, String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.auth.models import User
from app.config import Settings
from app.db import after_commit
from app.errors import Conflict
from app.executions import events
from app.executions.children import announce_cancelled, cancel_descendants, wake_parent
from app.executions.interrupts import control_channel
from app.executions.jobs import enqueue_chunk
from app.executions.status import TERMINAL, Status

log = logging.getLogger(__name__)


class Signal(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    KILL = "kill"
    INPUT = "input"


_PARKED_OR_WAITING = {
    Status.PENDING, Status.SCHEDULED, Status.PAUSED, Status.AWAITING_INPUT, Status.AWAITING_EVENT,
}  # fmt: skip

# signal -> {from status: to status} for changes that take effect at once.
TRANSITIONS: dict[Signal, dict[Status, Status]] = {
    Signal.PAUSE: {Status.PENDING: Status.PAUSED, Status.SCHEDULED: Status.PAUSED},
    Signal.RESUME: {Status.PAUSED: Status.PENDING},
    Signal.CANCEL: {s: Status.CANCELLED for s in (*_PARKED_OR_WAITING, Status.RUNNING)},
    Signal.KILL: {s: Status.CANCELLED for s in (*_PARKED_OR_WAITING, Status.RUNNING)},
    Signal.INPUT: {Status.AWAITING_INPUT: Status.PENDING},
}
# Requests that are already satisfied: accepted, nothing changes.
ALREADY_DONE: dict[Signal, set[Status]] = {
    Signal.PAUSE: {Status.PAUSED},
    Signal.CANCEL: {Status.CANCELLED},
    Signal.KILL: {Status.CANCELLED},
}
# Requests a worker carries out at its next step boundary.
DEFERRED: dict[Signal, set[Status]] = {Signal.PAUSE: {Status.RUNNING}}

_LOG_EVENTS = {
    Signal.PAUSE: "paused",
    Signal.RESUME: "resumed",
    Signal.CANCEL: "cancelled",
    Signal.KILL: "force_killed",
    Signal.INPUT: "input_received",
}

_TRANSITION = text(
    """
    WITH previous AS (
        SELECT id, status FROM agent_executions WHERE id = :id FOR UPDATE
    ), execution AS (
        UPDATE agent_executions e
        SET status = :to, updated_at = now(), lease = e.lease + :bump,
            paused_at = CASE WHEN :to = 'paused' THEN now() ELSE e.paused_at END,
            completed_at = CASE WHEN :to = 'cancelled' THEN now() ELSE e.completed_at END,
            worker_id = CASE WHEN :to = 'cancelled' THEN NULL ELSE e.worker_id END,
            metadata = (CASE WHEN :drop_key IS NULL THEN e.metadata
                             ELSE e.metadata - CAST(:drop_key AS text) END) || :metadata,
            state_snapshot = CASE WHEN :answer IS NULL THEN e.state_snapshot
                                  ELSE e.state_snapshot
                                       || '{"stop_reason": null, "pending_question": null}'
                             END
        FROM previous
        WHERE e.id = previous.id AND e.status = ANY(:from_statuses)
        RETURNING e.id, e.user_id, e.status, e.lease, e.queue, e.step_count, e.token_usage,
                  e.completed_at, e.parent_id, previous.status AS previous_status
    ), superseded AS (
        UPDATE agent_signals SET processed = true, processed_at = now()
        WHERE execution_id = :id AND NOT processed AND EXISTS (SELECT 1 FROM execution)
    ), signal AS (
        INSERT INTO agent_signals
            (execution_id, signal_type, payload, created_by, processed, processed_at)
        SELECT id, :signal, :payload, :user_id, true, now() FROM execution
    ), answer AS (
        INSERT INTO agent_messages (execution_id, seq, message)
        SELECT id, (SELECT count(*) FROM agent_messages WHERE execution_id = :id), :answer
        FROM execution WHERE :answer IS NOT NULL
    ), change_log AS (
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', :event_type, 'Status changed to ' || status,
               jsonb_build_object('from', previous_status, 'to', status, 'by', :user_id,
                                  'step_count', step_count, 'token_usage', token_usage)
        FROM execution
        RETURNING id
    )
    SELECT execution.*, change_log.id AS log_id FROM execution, change_log
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("to", type_=String),
    bindparam("bump", type_=Integer),
    bindparam("drop_key", type_=String),
    bindparam("metadata", type_=JSONB),
    bindparam("answer", type_=JSONB(none_as_null=True)),
    bindparam("from_statuses", type_=ARRAY(String)),
    bindparam("signal", type_=String),
    bindparam("payload", type_=JSONB),
    bindparam("user_id", type_=BigInteger),
    bindparam("event_type", type_=String),
)

_REQUEST = text(
    """
    INSERT INTO agent_signals (execution_id, signal_type, payload, created_by)
    SELECT id, :signal, :payload, :user_id FROM agent_executions
    WHERE id = :id AND status = ANY(:from_statuses)
    RETURNING id
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("from_statuses", type_=ARRAY(String)),
    bindparam("signal", type_=String),
    bindparam("payload", type_=JSONB),
    bindparam("user_id", type_=BigInteger),
)

_CURRENT = text("SELECT status FROM agent_executions WHERE id = :id").bindparams(
    bindparam("id", type_=UUID(as_uuid=True))
)


@dataclass(frozen=True)
class Outcome:
    """What a control request did: the status now, and whether it was accepted."""

    status: Status
    signal: Signal
    accepted: bool = True


class IllegalTransition(Conflict):
    type = "illegal-transition"
    title = "Not allowed in the execution's current status"


async def apply_signal(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    user: User,
    execution_id: uuid.UUID,
    signal: Signal,
    payload: dict[str, Any] | None = None,
) -> Outcome:
    """Carry out ``signal`` on a visible execution; side effects run after commit."""
    payload = payload or {}
    changed = await _transition(session, user, execution_id, signal, payload)
    if changed is not None:
        descendants = []
        if signal in (Signal.CANCEL, Signal.KILL):
            descendants = await cancel_descendants(session, execution_id)
        _after_transition(session, redis, settings, signal, changed, descendants)
        return Outcome(Status(changed.status), signal)
    current = Status(await session.scalar(_CURRENT, {"id": execution_id}))
    if current in ALREADY_DONE.get(signal, set()):
        return Outcome(current, signal)
    if current in DEFERRED.get(signal, set()):
        requested = await session.scalar(
            _REQUEST,
            {
                "id": execution_id,
                "from_statuses": [s.value for s in DEFERRED[signal]],
                "signal": signal.value,
                "payload": payload,
                "user_id": user.id,
            },
        )
        if requested is not None:
            return Outcome(current, signal)
        current = Status(await session.scalar(_CURRENT, {"id": execution_id}))
    raise IllegalTransition(
        f"Cannot {signal.value} an execution that is {current.value}.",
        current_status=current.value,
        signal=signal.value,
    )


async def _transition(
    session: AsyncSession,
    user: User,
    execution_id: uuid.UUID,
    signal: Signal,
    payload: dict[str, Any],
) -> Any:
    allowed = TRANSITIONS[signal]
    targets = set(allowed.values())
    assert len(targets) == 1, "one target status per signal"
    answer = None
    if signal is Signal.INPUT:
        answer = {"role": "user", "content": str(payload.get("answer", ""))}
    result = await session.execute(
        _TRANSITION,
        {
            "id": execution_id,
            "to": targets.pop().value,
            "bump": 1 if signal in (Signal.CANCEL, Signal.KILL) else 0,
            "drop_key": "question" if signal is Signal.INPUT else None,
            "metadata": {"force_killed": True} if signal is Signal.KILL else {},
            "answer": answer,
            "from_statuses": [s.value for s in allowed],
            "signal": signal.value,
            "payload": payload,
            "user_id": user.id,
            "event_type": _LOG_EVENTS[signal],
        },
    )
    return result.first()


def _after_transition(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    signal: Signal,
    row: Any,
    descendants: list[Any],
) -> None:
    status = Status(row.status)
    db = session.bind
    event = events.status_changed(
        row.id, row.log_id, status, step_count=row.step_count, token_usage=row.token_usage,
        completed_at=row.completed_at,
    )  # fmt: skip

    async def notify() -> None:
        # Committed already: if Redis fails here the sweep requeues a pending execution, and a
        # worker still running a cancelled one is fenced by the lease at its next write.
        try:
            if status is Status.PENDING:
                await enqueue_chunk(redis, row.id, row.lease, row.queue)
            if status in TERMINAL:
                await redis.publish(
                    control_channel(row.id), json.dumps({"signal": signal.value}).encode()
                )
            await events.publish(redis, row.id, row.user_id, [event])
            await announce_cancelled(redis, descendants)
            if status in TERMINAL and row.parent_id is not None:
                assert isinstance(db, AsyncEngine)
                await wake_parent(db, redis, settings, row.parent_id)
        except Exception:
            log.warning("could not notify about %s of %s", signal.value, row.id, exc_info=True)

    after_commit(session, notify)
