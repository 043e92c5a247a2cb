"""The executions API's statements: start, control requests and reads (the worker's are in
worker_repository.py, subagents' in subagent_repository.py, the sweep's in
recovery_repository.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    TextClause,
    bindparam,
    delete,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import RawStatement, json_serializer
from app.executions.models import Execution, ExecutionLog, ExecutionMessage, IdempotencyKey
from app.executions.transitions import (
    ANSWER,
    CANCEL,
    CREATE,
    CREATE_SCHEDULED,
    CREATE_WAITING,
    KILL,
    PAUSE,
    PAUSE_AT_STEP,
    RESUME,
    RESUME_SCHEDULED,
    RESUME_WAITING,
    SUBSCRIBED,
    TERMINAL,
    TERMINAL_SQL,
    WAIT_WITH_DEADLINE,
    Move,
    Signal,
    Status,
    StatusChange,
    StatusLog,
    change_status,
    creation_log,
)


def _insert_execution(move: Move) -> RawStatement:
    """A new execution and its first status log: pending; waiting for an event until
    ``wait.timeout_seconds`` from now; or scheduled to start at ``run_at``."""
    return RawStatement.compile(
        f"""
        WITH execution AS (
            INSERT INTO agent_executions
                (id, user_id, agent_type, queue, queue_reason, input, metadata, status, wait,
                 run_at)
            VALUES (:id, :user_id, :agent_type, :queue, :queue_reason, :input::jsonb,
                    :metadata::jsonb, '{move.target}',
                    {WAIT_WITH_DEADLINE.format(wait="CAST(:wait AS jsonb)")},
                    :run_at::timestamptz)
            RETURNING *
        ), status_log AS ({creation_log(move, source="execution")})
        SELECT execution.*, '{move.name}' AS move,
               {SUBSCRIBED.replace("e.user_id", "execution.user_id")} AS subscribed,
               status_log.id AS log_id,
               status_log.context AS log_context
        FROM execution, status_log
        """
    )


_INSERT_EXECUTION = {
    move: _insert_execution(move) for move in (CREATE, CREATE_WAITING, CREATE_SCHEDULED)
}

_COLUMNS = [(attr.key, attr.columns[0].name) for attr in inspect(Execution).column_attrs]


def _signal_row(*, delivers: bool) -> str:
    """The request itself, recorded: a delivery (an answer) waits, unprocessed, for the worker
    to hand it to the agent; any other request is done once the move is made."""
    processed = "false, NULL" if delivers else "true, now()"
    return f"""signal AS (
        INSERT INTO agent_signals
            (execution_id, signal_type, payload, created_by, processed, processed_at)
        SELECT id, :signal, :payload, :user_id, {processed} FROM changed
    )"""


def _control(
    *moves: Move, sets: str = "", delivers: bool = False, choose: str | None = None
) -> TextClause:
    # A pause requested earlier is void once the execution moves (a terminal move closes
    # every open signal by itself); a delivery stays for the worker.
    superseded = """superseded AS (
        UPDATE agent_signals SET processed = true, processed_at = now()
        WHERE execution_id = :id AND NOT processed AND signal_type = 'pause'
          AND EXISTS (SELECT 1 FROM changed)
    )"""
    after = [_signal_row(delivers=delivers)]
    if all(move.target not in TERMINAL for move in moves):
        after.insert(0, superseded)
    return text(
        change_status(
            moves,
            where="e.id = :id",
            choose=choose,
            sets=sets,
            after=after,
            log=StatusLog(context="jsonb_build_object('by', :user_id)"),
        )
    ).bindparams(
        bindparam("id", type_=UUID(as_uuid=True)),
        bindparam("payload", type_=JSONB),
        bindparam("user_id", type_=BigInteger),
    )


# The move each control request makes at once; a pause of a running execution is instead a
# request the worker carries out (PAUSE_AT_STEP).
_CONTROL: dict[Signal, TextClause] = {
    Signal.PAUSE: _control(PAUSE),
    # An execution paused while it waited (for an event, for its subagents) waits again; one
    # paused before its start time waits for that time again.
    Signal.RESUME: _control(
        RESUME,
        RESUME_SCHEDULED,
        RESUME_WAITING,
        RESUME_SCHEDULED,
        choose=f"""CASE WHEN e.wait IS NOT NULL THEN '{RESUME_WAITING.name}'
                        WHEN e.started_at IS NULL AND e.run_at > now()
                        THEN '{RESUME_SCHEDULED.name}'
                        ELSE '{RESUME.name}' END""",
    ),
    Signal.CANCEL: _control(CANCEL),
    Signal.KILL: _control(KILL, sets="""metadata = e.metadata || '{"force_killed": true}'"""),
    Signal.INPUT: _control(ANSWER, sets="metadata = e.metadata - 'question'", delivers=True),
}
DEFERRED: dict[Signal, Move] = {Signal.PAUSE: PAUSE_AT_STEP}

_REQUEST = text(
    """
    INSERT INTO agent_signals (execution_id, signal_type, payload, created_by)
    SELECT id, :signal, :payload, :user_id FROM agent_executions
    WHERE id = :id AND status IN :sources
    RETURNING id
    """
).bindparams(
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("sources", expanding=True),
    bindparam("payload", type_=JSONB),
    bindparam("user_id", type_=BigInteger),
)


# Keeps the start lock's keys apart from any other advisory lock the database may see.
_STARTS_LOCK_NAMESPACE = 0x61676E74
_LOCK_STARTS = text("SELECT pg_advisory_xact_lock(:namespace, :key)")
_START_USAGE = RawStatement.compile(
    f"""
    SELECT count(*) FILTER (WHERE status NOT IN ({TERMINAL_SQL}, 'scheduled')) AS active,
           count(*) FILTER (WHERE created_at > :since::timestamptz) AS started,
           min(created_at) FILTER (WHERE created_at > :since::timestamptz) AS oldest
    FROM agent_executions
    WHERE user_id = :user_id::bigint AND parent_id IS NULL
    """
)


@dataclass(frozen=True, slots=True)
class StartUsage:
    """A user's executions started over the API: unfinished ones, and those since a time."""

    active: int
    started: int
    oldest: datetime | None


async def lock_user_starts(session: AsyncSession, user_id: int) -> None:
    """Serialise the user's starts until the transaction ends."""
    await session.execute(
        _LOCK_STARTS, {"namespace": _STARTS_LOCK_NAMESPACE, "key": user_id % 2**31}
    )


async def start_usage(session: AsyncSession, user_id: int, *, since: datetime) -> StartUsage:
    """Sent as written on the session's connection (every start runs it): in the transaction
    that :func:`lock_user_starts` began, when it ran first."""
    conn = await session.connection()
    row = await _START_USAGE.fetchrow(conn, {"user_id": user_id, "since": since})
    return StartUsage(row["active"], row["started"], row["oldest"])


@dataclass(frozen=True, slots=True)
class Created:
    """A new execution and its first status change (``pending``, logged)."""

    execution: Execution
    change: StatusChange


async def insert_execution(
    session: AsyncSession,
    *,
    user_id: int,
    agent_type: str,
    queue: str,
    input: dict[str, Any],
    metadata: dict[str, Any],
    wait: dict[str, Any] | None = None,
    run_at: datetime | None = None,
    queue_reason: str | None = None,
) -> Created:
    """A new execution and its first status log, in one statement: this is on every start's
    path. It is pending; with ``wait`` (``{event, key, timeout_seconds}``) it waits for that
    event; with ``run_at`` it is scheduled to start then."""
    move = CREATE_WAITING if wait is not None else CREATE_SCHEDULED if run_at else CREATE
    # Sent as written on the session's connection, in the transaction the tier check began
    # (every start takes its lock first).
    row = await _INSERT_EXECUTION[move].fetchrow(
        await session.connection(),
        {
            "wait": None if wait is None else json_serializer(wait),
            "run_at": run_at,
            "id": uuid.uuid4(),
            "user_id": user_id,
            "agent_type": agent_type,
            "queue": queue,
            "queue_reason": queue_reason,
            "input": json_serializer(input),
            "metadata": json_serializer(metadata),
        },
    )
    execution = Execution(**{key: row[column] for key, column in _COLUMNS})
    change = StatusChange.from_row(row)
    return Created(execution, change)


async def apply_control(
    session: AsyncSession,
    execution_id: uuid.UUID,
    signal: Signal,
    *,
    payload: dict[str, Any],
    user_id: int,
) -> StatusChange | None:
    """Make ``signal``'s move now; None when the execution is not in one of its sources."""
    result = await session.execute(
        _CONTROL[signal],
        {"id": execution_id, "signal": signal.value, "payload": payload, "user_id": user_id},
    )
    row = result.first()
    return None if row is None else StatusChange.from_row(row._mapping)


async def request_control(
    session: AsyncSession,
    execution_id: uuid.UUID,
    signal: Signal,
    *,
    payload: dict[str, Any],
    user_id: int,
) -> bool:
    """Record ``signal`` for the worker to carry out at its next step boundary; False when the
    execution is not in a status where the worker does."""
    requested = await session.scalar(
        _REQUEST,
        {
            "id": execution_id,
            "sources": sorted(DEFERRED[signal].sources),
            "signal": signal.value,
            "payload": payload,
            "user_id": user_id,
        },
    )
    return requested is not None


async def current_status(session: AsyncSession, execution_id: uuid.UUID) -> Status:
    status = await session.scalar(select(Execution.status).where(Execution.id == execution_id))
    assert status is not None, "an execution is never deleted while it is steered"
    return Status(status)


async def get_execution(
    session: AsyncSession, execution_id: uuid.UUID, *, user_id: int | None = None
) -> Execution | None:
    """One execution; with ``user_id``, only if that user owns it."""
    query = select(Execution).where(Execution.id == execution_id)
    if user_id is not None:
        query = query.where(Execution.user_id == user_id)
    execution: Execution | None = await session.scalar(query)
    return execution


async def reload_execution(session: AsyncSession, execution_id: uuid.UUID) -> Execution | None:
    """The execution's current row, refreshing any copy the session already holds."""
    return await session.get(Execution, execution_id, populate_existing=True)


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


async def list_messages(
    session: AsyncSession, execution_id: uuid.UUID, *, after_seq: int | None, limit: int
) -> list[ExecutionMessage]:
    """Conversation turns in order after the ``after_seq`` cursor."""
    query = select(ExecutionMessage).where(ExecutionMessage.execution_id == execution_id)
    if after_seq is not None:
        query = query.where(ExecutionMessage.seq > after_seq)
    rows = await session.scalars(query.order_by(ExecutionMessage.seq).limit(limit))
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


async def list_children(session: AsyncSession, execution_id: uuid.UUID) -> list[Execution]:
    rows = await session.scalars(
        select(Execution)
        .where(Execution.parent_id == execution_id)
        .order_by(Execution.created_at, Execution.id)
    )
    return list(rows)


# A key younger than a day is taken; an older one is claimed afresh. A second request with a
# key in use waits here for the first one's transaction, then sees its response.
_CLAIM_KEY = text(
    """
    INSERT INTO idempotency_keys (user_id, key, request_hash)
    VALUES (:user_id, :key, :request_hash)
    ON CONFLICT (user_id, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, response = NULL, created_at = now()
        WHERE idempotency_keys.created_at < now() - make_interval(secs => :keep_seconds)
    RETURNING true
    """
).bindparams(bindparam("user_id", type_=BigInteger))


async def claim_idempotency_key(
    session: AsyncSession, user_id: int, key: str, request_hash: str, keep_seconds: float
) -> IdempotencyKey | None:
    """Take ``key`` for a new start (None), or the stored record of the start it was used for."""
    claimed = await session.execute(
        _CLAIM_KEY,
        {
            "user_id": user_id,
            "key": key,
            "request_hash": request_hash,
            "keep_seconds": keep_seconds,
        },
    )
    if claimed.scalar() is not None:
        return None
    return await session.get(IdempotencyKey, (user_id, key), populate_existing=True)


async def record_idempotent_response(
    session: AsyncSession, user_id: int, key: str, response: dict[str, Any]
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(response=response)
    )


async def prune_idempotency_keys(conn: AsyncConnection, keep_seconds: float) -> int:
    """Forget keys older than ``keep_seconds``; how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=keep_seconds)
    result = await conn.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(result.rowcount or 0)
