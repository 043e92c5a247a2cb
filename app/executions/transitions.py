"""The execution state machine: every status, every move between them and who makes it, and the
one builder of the statements that change a status and write its log row.

Each move is one conditional UPDATE (``... WHERE status IN (<its sources>)``), so two racing
actors cannot both win, and the same statement writes the ``agent_logs`` row that streams
replay. The repositories compose their statements with :func:`change_status`,
:func:`status_log` and :func:`creation_log`; no other code writes a status or a status log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class Status(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    AWAITING_INPUT = "awaiting_input"
    AWAITING_EVENT = "awaiting_event"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
UNFINISHED = frozenset(Status) - TERMINAL
ALL_STATUSES = tuple(s.value for s in Status)


class EventType(StrEnum):
    """The ``event_type`` of an ``agent_logs`` row."""

    STEP_COMPLETED = "step_completed"
    STATUS_CHANGED = "status_changed"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    FORCE_KILLED = "force_killed"
    INPUT_RECEIVED = "input_received"
    SUBAGENTS_FINISHED = "subagents_finished"
    EVENT_WAITING = "event_waiting"
    EVENT_RECEIVED = "event_received"
    EVENT_TIMEOUT = "event_timeout"
    COMPLETED = "completed"
    FAILED = "failed"
    TOOL_CALLED = "tool_called"
    TOOL_COMPLETED = "tool_completed"
    WARNING = "warning"


class Actor(StrEnum):
    """Who makes a move."""

    CLIENT = "client"  # a start or control request over the API
    WORKER = "worker"  # the worker stepping the execution
    SWEEP = "sweep"  # the recovery sweep, for work whose worker died
    PARENT = "parent"  # the parent execution ended, taking its subagents with it
    CHILDREN = "children"  # the last subagent of a waiting parent finished
    EVENTS = "events"  # an event delivered over the API or a signed webhook
    TIMER = "timer"  # a deadline passed (a deferred job, or the sweep as its backstop)


class Signal(StrEnum):
    """What ``agent_signals`` rows ask for.

    The first five are control requests over the API. ``input`` also carries a delivery, and
    the last three are nothing else: the payload the worker hands to the agent
    (``Agent.answer``, ``Agent.receive_subagent_results``, ``Agent.receive_event``) when it
    next claims the execution.
    """

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    KILL = "kill"
    INPUT = "input"
    SUBAGENT_RESULTS = "subagent_results"
    EVENT = "event"
    EVENT_TIMEOUT = "event_timeout"


DELIVERIES = (Signal.INPUT, Signal.SUBAGENT_RESULTS, Signal.EVENT, Signal.EVENT_TIMEOUT)

Level = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Move:
    """One transition: from any of ``sources`` (none: the execution is created) to ``target``."""

    name: str
    actor: Actor
    sources: frozenset[Status]
    target: Status
    event_type: EventType = EventType.STATUS_CHANGED
    level: Level = "info"
    # A new lease: a worker still holding the old one can never write again, and the next job
    # has a fresh id (an old job's kept result cannot block it).
    bumps_lease: bool = False


def _move(
    name: str,
    actor: Actor,
    sources: Iterable[Status],
    target: Status,
    event_type: EventType = EventType.STATUS_CHANGED,
    *,
    level: Level = "info",
    bumps_lease: bool = False,
) -> Move:
    return Move(name, actor, frozenset(sources), target, event_type, level, bumps_lease)


S, E, A = Status, EventType, Actor
# fmt: off
CREATE = _move("create", A.CLIENT, (), S.PENDING)
CREATE_WAITING = _move("create waiting", A.CLIENT, (), S.AWAITING_EVENT, E.EVENT_WAITING)
CREATE_SCHEDULED = _move("schedule", A.CLIENT, (), S.SCHEDULED)
START_ON_TIME = _move("start on time", A.TIMER, (S.SCHEDULED,), S.PENDING)
SPAWN = _move("spawn", A.WORKER, (), S.PENDING)  # a subagent, created by its parent's step
CLAIM = _move("claim", A.WORKER, (S.PENDING, S.RUNNING), S.RUNNING, bumps_lease=True)
PARK_AT_CLAIM = _move("pause at claim", A.WORKER, (S.PENDING, S.RUNNING), S.PAUSED, E.PAUSED,
                      bumps_lease=True)  # a pause requested between chunks
PAUSE = _move("pause", A.CLIENT, (S.PENDING, S.SCHEDULED, S.AWAITING_EVENT), S.PAUSED, E.PAUSED)
PAUSE_AT_STEP = _move("pause at step", A.WORKER, (S.RUNNING,), S.PAUSED, E.PAUSED)
RESUME = _move("resume", A.CLIENT, (S.PAUSED,), S.PENDING, E.RESUMED, bumps_lease=True)
RESUME_WAITING = _move("resume waiting", A.CLIENT, (S.PAUSED,), S.AWAITING_EVENT, E.RESUMED,
                       bumps_lease=True)  # paused while it waited: it waits again
RESUME_SCHEDULED = _move("resume scheduled", A.CLIENT, (S.PAUSED,), S.SCHEDULED, E.RESUMED,
                         bumps_lease=True)  # paused before its start time: waits for it again
CANCEL = _move("cancel", A.CLIENT, UNFINISHED, S.CANCELLED, E.CANCELLED, bumps_lease=True)
KILL = _move("kill", A.CLIENT, UNFINISHED, S.CANCELLED, E.FORCE_KILLED, bumps_lease=True)
ANSWER = _move("answer", A.CLIENT, (S.AWAITING_INPUT,), S.PENDING, E.INPUT_RECEIVED)
COMPLETE = _move("complete", A.WORKER, (S.RUNNING,), S.COMPLETED, E.COMPLETED)
ASK = _move("ask the user", A.WORKER, (S.RUNNING,), S.AWAITING_INPUT)
DELEGATE = _move("wait for subagents", A.WORKER, (S.RUNNING,), S.AWAITING_EVENT)
WAIT = _move("wait for an event", A.WORKER, (S.RUNNING,), S.AWAITING_EVENT, E.EVENT_WAITING)
FAIL = _move("fail", A.WORKER, (S.RUNNING,), S.FAILED, E.FAILED, level="error")
WAKE = _move("subagents finished", A.CHILDREN, (S.AWAITING_EVENT,), S.PENDING,
             E.SUBAGENTS_FINISHED)
CANCEL_WITH_PARENT = _move("cancel with parent", A.PARENT, UNFINISHED, S.CANCELLED, E.CANCELLED,
                           bumps_lease=True)
ABANDON = _move("worker lost", A.SWEEP, (S.RUNNING,), S.FAILED, E.FAILED, level="error")
EVENT_ARRIVED = _move("event arrived", A.EVENTS, (S.AWAITING_EVENT,), S.PENDING, E.EVENT_RECEIVED)
EVENT_HELD = _move("event held while paused", A.EVENTS, (S.PAUSED,), S.PAUSED, E.EVENT_RECEIVED)
WAIT_TIMED_OUT = _move("wait timed out", A.TIMER, (S.AWAITING_EVENT,), S.PENDING, E.EVENT_TIMEOUT)
# fmt: on
del S, E, A

MOVES: tuple[Move, ...] = (
    CREATE, CREATE_WAITING, CREATE_SCHEDULED, START_ON_TIME, SPAWN, CLAIM, PARK_AT_CLAIM,
    PAUSE, PAUSE_AT_STEP, RESUME, RESUME_WAITING, RESUME_SCHEDULED, CANCEL, KILL, ANSWER,
    COMPLETE, ASK, DELEGATE, WAIT, FAIL, WAKE, CANCEL_WITH_PARENT, ABANDON, EVENT_ARRIVED,
    EVENT_HELD, WAIT_TIMED_OUT,
)  # fmt: skip

# Log rows that record a status change (their context has from, to, step_count, token_usage).
STATUS_EVENT_TYPES = frozenset(move.event_type for move in MOVES)


def status_diagram() -> str:
    """The state machine in Markdown: a Mermaid diagram and a table of every move.

    The README shows this text; a test keeps the two the same.
    """
    edges, anywhere = [], []
    for move in MOVES:
        if move.sources == UNFINISHED:
            anywhere.append(move.name)
            continue
        for source in [s.value for s in sorted(move.sources)] or ["[*]"]:
            edges.append(f"    {source} --> {move.target}: {move.name}")
    lines = ["```mermaid", "stateDiagram-v2", *edges]
    lines += [f"    {status} --> [*]" for status in sorted(TERMINAL)]
    lines += ["```", "", f"From any unfinished status: {', '.join(anywhere)}.", ""]
    lines += ["| move | by | from | to | log event |", "|---|---|---|---|---|"]
    for move in MOVES:
        sources = ", ".join(sorted(move.sources))
        if move.sources == UNFINISHED:
            sources = "any unfinished"
        extras = " (new lease)" if move.bumps_lease else ""
        lines.append(
            f"| {move.name} | {move.actor} | {sources or '(new)'} | {move.target}{extras} "
            f"| `{move.event_type}` |"
        )
    return "\n".join(lines)


# --- statements ---------------------------------------------------------------------------------


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in sorted(values))


TERMINAL_SQL = _quoted(TERMINAL)
# Whether the owner has webhook subscriptions: read with the change, so the many users without
# any cost no extra query when their executions end.
SUBSCRIBED = "EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.user_id = e.user_id)"
# What an execution that waits records: the jsonb ``{wait}`` with, when it has
# ``timeout_seconds``, the ``deadline`` (database time) by which the wait ends.
WAIT_WITH_DEADLINE = """CASE WHEN {wait}::jsonb ? 'timeout_seconds'
    THEN {wait}::jsonb || jsonb_build_object('deadline',
        now() + make_interval(secs => ({wait}::jsonb ->> 'timeout_seconds')::float))
    ELSE {wait}::jsonb END"""


def _by_move(moves: Sequence[Move], attribute: str, move: str = "move") -> str:
    """SQL for ``attribute`` of the move named by the SQL ``move``."""
    values = {m.name: str(getattr(m, attribute)) for m in moves}
    if len(set(values.values())) == 1:
        return f"'{next(iter(values.values()))}'"
    cases = " ".join(f"WHEN '{name}' THEN '{value}'" for name, value in values.items())
    return f"CASE {move} {cases} END"


def status_log(
    moves: Sequence[Move],
    *,
    source: str,
    previous: str = "previous_status",
    message: str = "'Status changed to ' || status",
    context: str | None = None,
    only_if: str | None = None,
) -> str:
    """``INSERT`` of the status log row of every row of CTE ``source`` whose status changed.

    ``source`` returns ``id``, ``status``, ``step_count``, ``token_usage`` and, when there are
    several ``moves``, ``move`` (the name of the move each row made); ``previous`` is
    SQL for the status before (a column of ``source``, or ``NULL`` for a new execution);
    ``context`` is SQL for a jsonb object merged into the row's context; ``only_if`` a further
    condition (an ``EXISTS`` on another CTE makes that CTE write first). Returns ``id``,
    ``execution_id`` and ``context`` of each row written.
    """
    extra = f" || {context}" if context else ""
    return f"""
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, {_by_move(moves, "level")}, {_by_move(moves, "event_type")}, {message},
               jsonb_build_object('from', {previous}, 'to', status, 'step_count', step_count,
                                  'token_usage', token_usage){extra}
        FROM {source} WHERE {previous} IS DISTINCT FROM status{f" AND {only_if}" if only_if else ""}
        RETURNING id, execution_id, context"""


def creation_log(move: Move, *, source: str) -> str:
    """``INSERT`` of the first status log row of each execution the CTE ``source`` created."""
    assert not move.sources, f"{move.name} does not create executions"
    return status_log([move], source=source, previous="NULL", message="'Execution created'")


def _status_assignments(target: str, worker: str, *, bumps_lease: bool) -> list[str]:
    """What every status change sets besides the status: the time of the change, of a pause,
    of the end; the worker (only a running execution has one); a new lease if it fences."""
    assignments = [
        f"status = {target}",
        "updated_at = now()",
        f"paused_at = CASE WHEN {target} = 'paused' AND e.status <> 'paused' THEN now() "
        "ELSE e.paused_at END",
        f"completed_at = CASE WHEN {target} IN ({TERMINAL_SQL}) THEN now() ELSE e.completed_at END",
        f"worker_id = CASE WHEN {target} = 'running' THEN {worker} END",
    ]
    if bumps_lease:
        assignments.append("lease = e.lease + 1")
    return assignments


def change_status(
    moves: Sequence[Move],
    *,
    where: str,
    choose: str | None = None,
    sets: str = "",
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    returning: str = "",
    worker: str = "e.worker_id",
    log: StatusLog | None = None,
    recursive: bool = False,
    select: str = "SELECT changed.*, status_log.id AS log_id, status_log.context AS log_context "
    "FROM changed LEFT JOIN status_log ON status_log.execution_id = changed.id",
) -> str:
    """One statement that makes one of ``moves`` on the rows ``where`` selects, and logs it.

    Only rows in a source status of the moves change. With several moves, ``choose`` is SQL
    naming the move a row makes (NULL: none, its status stays; a row whose status stays gets no
    log row). The CTE ``changed`` returns ``id``, ``user_id``, ``status``, ``lease``,
    ``queue``, ``parent_id``, ``wait``, ``step_count``, ``token_usage``, ``completed_at`` and
    ``returning``; ``status_log`` the log rows written. ``before`` and ``after`` are further
    CTEs (``name AS (...)``) around ``changed``; ``sets`` further assignments (the table is
    ``e``); ``worker`` SQL for ``worker_id`` when the target is ``running``; ``recursive``
    when a ``before`` CTE is recursive; ``select`` the statement's result.
    A move to a terminal status also closes every signal the execution still had open.
    """
    assert len({move.bumps_lease for move in moves}) == 1, "the moves must agree on the lease"
    assert choose or len(moves) == 1, "several moves need SQL choosing between them"
    choose = choose or f"'{moves[0].name}'"
    cases = " ".join(f"WHEN '{move.name}' THEN '{move.target}'" for move in moves)
    target = f"(CASE {choose} {cases} ELSE e.status END)"
    sources = frozenset().union(*(move.sources for move in moves))
    if len(sources) == 1:
        locked, joined, previous = [], "", f"'{next(iter(sources))}'::varchar"
    else:
        # The UPDATE returns new values only: the status before comes from a locked read.
        locked = [
            f"previous AS (SELECT id, status FROM agent_executions e WHERE {where} FOR UPDATE)"
        ]
        joined, previous = "FROM previous", "previous.status"
    assignments = _status_assignments(target, worker, bumps_lease=moves[0].bumps_lease)
    if sets:
        assignments.append(sets)
    identity = "e.id = previous.id" if joined else where
    changed = f"""changed AS (
        UPDATE agent_executions e SET {", ".join(assignments)}
        {joined}
        WHERE {identity} AND e.status IN ({_quoted(sources)})
        RETURNING e.id, e.user_id, e.status, {previous} AS previous_status, {choose} AS move,
                  e.agent_type, e.lease, e.queue, e.parent_id, e.wait, e.run_at, e.step_count,
                  e.token_usage, e.completed_at, {SUBSCRIBED} AS subscribed
                  {", " + returning if returning else ""}
    )"""
    if all(move.target in TERMINAL for move in moves):
        after = [*after, _CLOSE_SIGNALS]
    log = log or StatusLog()
    logged = status_log(
        moves, source="changed", message=log.message, context=log.context, only_if=log.only_if
    )
    ctes = [*before, *locked, changed, *after, f"status_log AS ({logged})"]
    return ("WITH RECURSIVE " if recursive else "WITH ") + ",\n".join(ctes) + "\n" + select


_CLOSE_SIGNALS = """closed_signals AS (
    UPDATE agent_signals SET processed = true, processed_at = now()
    WHERE execution_id IN (SELECT id FROM changed) AND NOT processed
)"""


@dataclass(frozen=True)
class StatusLog:
    """How a statement's status log rows read: ``message`` and ``context`` (SQL, see
    :func:`status_log`) and ``only_if``, a further condition for writing them."""

    message: str = "'Status changed to ' || status"
    context: str | None = None
    only_if: str | None = None


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A committed change, as :func:`change_status`'s default ``select`` returns it."""

    execution_id: uuid.UUID
    user_id: int
    move: str  # the name of the move made
    agent_type: str
    status: Status
    lease: int
    queue: str
    parent_id: uuid.UUID | None
    wait: dict[str, Any] | None
    run_at: datetime | None
    completed_at: datetime | None
    subscribed: bool  # the owner has webhook subscriptions
    log_id: int
    log_context: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StatusChange:
        """From a row with ``changed``'s columns, ``log_id`` and ``log_context``."""
        return cls(
            execution_id=row["id"],
            user_id=row["user_id"],
            move=row["move"],
            agent_type=row["agent_type"],
            status=Status(row["status"]),
            lease=row["lease"],
            queue=row["queue"],
            parent_id=row["parent_id"],
            wait=row["wait"],
            run_at=row["run_at"],
            subscribed=row["subscribed"],
            completed_at=row["completed_at"],
            log_id=row["log_id"],
            log_context=row["log_context"],
        )


def step_log(*, source: str, message: str, context: str, after: str | None = None) -> str:
    """``INSERT`` of a ``step_completed`` row for each row of CTE ``source`` (id, created_at);
    written after every row of CTE ``after`` (its rows get lower ids)."""
    ordered = "" if after is None else f" WHERE (SELECT count(*) FROM {after}) >= 0"
    return f"""
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT id, 'info', '{EventType.STEP_COMPLETED}', {message}, {context} FROM {source}
        {ordered}
        RETURNING id, created_at"""


def entries_log(*, source: str, entries: str) -> str:
    """``INSERT`` of the log rows in JSON array ``entries`` (objects with ``level``,
    ``event_type``, ``message``, ``context``) for each row of CTE ``source``, in order."""
    return f"""
        INSERT INTO agent_logs (execution_id, level, event_type, message, context)
        SELECT s.id, t.entry ->> 'level', t.entry ->> 'event_type', t.entry ->> 'message',
               t.entry -> 'context'
        FROM {source} s, jsonb_array_elements({entries}) WITH ORDINALITY AS t(entry, n)
        ORDER BY t.n
        RETURNING id"""
