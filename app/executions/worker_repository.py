"""The worker's statements, written out by hand for the per-step hot path.

Each is a single round trip that does everything its moment needs (claim and load; commit a whole
step; fail). They run on the asyncpg connection under SQLAlchemy's pooled connection, in
autocommit, so a statement is its own transaction and costs no ORM or Core bookkeeping. jsonb
parameters are passed as JSON text and come back decoded (the dialect's jsonb codec).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import Connection, RawStatement, json_serializer
from app.executions.transitions import (
    ASK,
    CLAIM,
    COMPLETE,
    DELEGATE,
    DELIVERIES,
    FAIL,
    PARK_AT_CLAIM,
    PAUSE_AT_STEP,
    SPAWN,
    TERMINAL_SQL,
    WAIT,
    WAIT_WITH_DEADLINE,
    Move,
    Signal,
    Status,
    StatusChange,
    StatusLog,
    change_status,
    creation_log,
    entries_log,
    step_log,
)

_PAUSE_REQUEST = """pause AS (
    SELECT id FROM agent_signals
    WHERE execution_id = :id AND NOT processed AND signal_type = 'pause'
)"""
_CONSUME_PAUSE = """consumed AS (
    UPDATE agent_signals SET processed = true, processed_at = now()
    WHERE id IN (SELECT id FROM pause) AND EXISTS (SELECT 1 FROM changed)
)"""

# A pause requested while no step was running (between chunks) takes effect at the claim: the
# execution parks instead of running. Deliveries stay unprocessed until the first step that
# follows them commits, so a worker that dies before then loses none.
_CLAIM = RawStatement.compile(
    change_status(
        [CLAIM, PARK_AT_CLAIM],
        where="e.id = :id AND e.lease = :lease",
        choose=f"CASE WHEN EXISTS (SELECT 1 FROM pause) THEN '{PARK_AT_CLAIM.name}' "
        f"ELSE '{CLAIM.name}' END",
        worker=":worker_id",
        sets="heartbeat_at = now(), started_at = coalesce(e.started_at, now()), "
        "chunk_count = e.chunk_count + 1",
        before=[_PAUSE_REQUEST],
        after=[_CONSUME_PAUSE],
        returning="e.agent_type, e.input, e.state_snapshot, e.chunk_count, e.depth, "
        "e.workspace_id, e.inherited, e.root_id, e.descendant_tokens",
        log=StatusLog(context="jsonb_build_object('worker', :worker_id::text)"),
        select=f"""
        SELECT changed.*, status_log.id AS log_id, status_log.context AS log_context,
               (SELECT coalesce(jsonb_agg(m.message ORDER BY m.seq), '[]'::jsonb)
                  FROM agent_messages m WHERE m.execution_id = changed.id) AS messages,
               (SELECT coalesce(jsonb_agg(jsonb_build_object(
                           'id', s.id, 'signal', s.signal_type, 'payload', s.payload)
                           ORDER BY s.id), '[]'::jsonb)
                  FROM agent_signals s
                  WHERE s.execution_id = changed.id AND NOT s.processed
                    AND s.signal_type IN ({", ".join(f"'{d}'" for d in DELIVERIES)})
               ) AS deliveries,
               root.agent_type AS root_agent_type,
               root.token_usage + root.descendant_tokens AS root_tree_tokens
        FROM changed LEFT JOIN status_log ON true
             LEFT JOIN agent_executions root ON root.id = changed.root_id""",
    )
)

# One statement per step. A finish status ends (completed) or parks (awaiting_input; waiting
# for subagents, which it creates) the execution; else a pending pause request parks it.
_COMMIT_STEP = RawStatement.compile(
    change_status(
        [PAUSE_AT_STEP, COMPLETE, ASK, DELEGATE, WAIT],
        where="e.id = :id AND e.lease = :lease",
        # A pause requested during a step that starts a wait parks the execution paused with
        # its wait recorded (resuming returns to the wait); any other finish wins over it.
        choose=f"""CASE WHEN EXISTS (SELECT 1 FROM pause)
                         AND coalesce(:finish_move::varchar, '{WAIT.name}')
                             IN ('{WAIT.name}', '{DELEGATE.name}')
                        THEN '{PAUSE_AT_STEP.name}'
                        ELSE :finish_move::varchar END""",
        sets="""step_count = :step_count, token_usage = :token_usage, usage = :usage::jsonb,
            state_snapshot = :snapshot::jsonb, heartbeat_at = now(),
            output = coalesce(:output::jsonb, e.output),
            metadata = CASE WHEN :metadata::jsonb IS NULL THEN e.metadata
                            ELSE e.metadata || :metadata::jsonb END,
            wait = CASE WHEN :wait::jsonb IS NULL THEN e.wait ELSE """
        + WAIT_WITH_DEADLINE.format(wait=":wait")
        + " END",
        returning="e.depth, e.root_id",
        before=[_PAUSE_REQUEST],
        after=[
            """children AS (
                INSERT INTO agent_executions
                    (id, user_id, agent_type, queue, parent_id, root_id, depth, input,
                     workspace_id, inherited, created_at)
                SELECT (c ->> 'id')::uuid, changed.user_id, c ->> 'agent_type', c ->> 'queue',
                       changed.id, coalesce(changed.root_id, changed.id), changed.depth + 1,
                       c -> 'input', (c ->> 'workspace_id')::uuid, c -> 'inherited',
                       -- distinct creation times keep the children in the order asked for
                       now() + n * interval '1 microsecond'
                FROM changed, jsonb_array_elements(:children::jsonb) WITH ORDINALITY AS t(c, n)
                WHERE :children::jsonb IS NOT NULL
                RETURNING id, status, step_count, token_usage
            )""",
            f"children_log AS ({creation_log(SPAWN, source='children')})",
            _CONSUME_PAUSE,
            """delivered AS (
                UPDATE agent_signals SET processed = true, processed_at = now()
                WHERE id = ANY(:delivered::bigint[]) AND EXISTS (SELECT 1 FROM changed)
            )""",
            """messages AS (
                INSERT INTO agent_messages (execution_id, seq, message)
                SELECT changed.id, :first_seq::int + m.ordinality - 1, m.value
                FROM changed,
                     jsonb_array_elements(:messages::jsonb) WITH ORDINALITY AS m(value, ordinality)
            )""",
            f"entries_log AS ({entries_log(source='changed', entries=':entries::jsonb')})",
            "step_log AS ("
            + step_log(
                source="changed",
                message=":log_message",
                context=":log_context::jsonb",
                after="entries_log",
            )
            + ")",
        ],
        # The tool and warning rows, then the step's row, then the status row: event ids
        # follow the order things happened in.
        log=StatusLog(only_if="EXISTS (SELECT 1 FROM step_log)"),
        select="""
        SELECT changed.*, status_log.id AS log_id, status_log.context AS log_context,
               step_log.id AS step_log_id, step_log.created_at AS step_created_at,
               (SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}') FROM entries_log x)
                   AS entry_ids
        FROM changed JOIN step_log ON true LEFT JOIN status_log ON true""",
    )
)

# A subagent's step's tokens, added to its root after the step committed. A statement of its
# own: the step statement locks the subagent's row, a cancel locks the root's and then its
# subagents'; taking the root's row in the step statement too would let the two deadlock.
_ROLL_UP = RawStatement.compile(
    """
    UPDATE agent_executions SET descendant_tokens = descendant_tokens + :tokens::bigint
    WHERE id = :root
    RETURNING token_usage + descendant_tokens AS tree_tokens
    """
)

_FAIL = RawStatement.compile(
    change_status(
        [FAIL],
        where="e.id = :id AND e.lease = :lease",
        sets="error = :error::jsonb",
        log=StatusLog(message=":message", context="jsonb_build_object('error', :error::jsonb)"),
    )
)

# Only the lease decides whether the worker still owns the execution: right after the final
# step committed (status completed) the heartbeat must not read as a lost lease.
_HEARTBEAT = RawStatement.compile(
    """
    UPDATE agent_executions e
    SET heartbeat_at = CASE WHEN e.status = 'running' THEN now() ELSE e.heartbeat_at END
    FROM unnest(:ids::uuid[], :leases::int[]) AS held(id, lease)
    WHERE e.id = held.id AND e.lease = held.lease
    RETURNING e.id
    """
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What an execution was woken with, for the agent (an answer, its subagents' results)."""

    id: int
    signal: Signal
    payload: dict[str, Any]


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
    deliveries: list[Delivery]
    lease: int
    chunk_count: int
    status: Status
    depth: int
    workspace_id: uuid.UUID | None  # whose workspace directory it works in (None: its own)
    inherited: dict[str, Any] | None  # model settings from the execution that spawned it
    change: StatusChange | None  # set when the claim changed the status
    token_usage: int  # its own tokens so far
    descendant_tokens: int  # a root's: the tokens of every subagent below it
    root: RootTokens | None  # a subagent's: its root, whose max_tokens the whole tree shares


@dataclass(frozen=True, slots=True)
class RootTokens:
    """A subagent's root and the tokens its tree has used (the root's and every subagent's)."""

    id: uuid.UUID
    agent_type: str
    tree_tokens: int


@dataclass(frozen=True, slots=True)
class NewChild:
    """A subagent execution a step creates."""

    id: uuid.UUID
    agent_type: str
    queue: str
    prompt: str
    workspace_id: uuid.UUID | None
    inherited: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepCommit:
    """Everything one step writes. ``finish`` ends or parks the execution: COMPLETE (with
    ``output``), ASK (merging ``metadata``), DELEGATE to the ``children`` it creates, or WAIT
    for an event; a parked execution records what it waits for in ``wait``. ``delivered`` are
    the deliveries the step has consumed."""

    execution_id: uuid.UUID
    lease: int
    step_count: int
    usage: dict[str, int]
    snapshot: dict[str, Any]
    first_seq: int
    messages: list[dict[str, Any]]
    log_context: dict[str, Any]
    entries: list[dict[str, Any]] | None = None
    finish: Move | None = None
    output: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    children: list[NewChild] | None = None
    wait: dict[str, Any] | None = None
    delivered: list[int] | None = None

    def parameters(self) -> dict[str, Any]:
        def encoded(value: object) -> str | None:
            return None if value is None else json_serializer(value)

        children = None
        if self.children is not None:
            children = [
                {"id": str(c.id), "agent_type": c.agent_type, "queue": c.queue,
                 "input": {"prompt": c.prompt}, "inherited": c.inherited,
                 "workspace_id": None if c.workspace_id is None else str(c.workspace_id)}
                for c in self.children
            ]  # fmt: skip
        return {
            "id": self.execution_id,
            "lease": self.lease,
            "step_count": self.step_count,
            "token_usage": self.usage["input_tokens"] + self.usage["output_tokens"],
            "usage": json_serializer(self.usage),
            "snapshot": json_serializer(self.snapshot),
            "finish_move": None if self.finish is None else self.finish.name,
            "output": encoded(self.output),
            "first_seq": self.first_seq,
            "messages": json_serializer(self.messages),
            "log_message": f"Step {self.log_context['step_number']} completed",
            "log_context": json_serializer(self.log_context),
            "entries": json_serializer(self.entries or []),
            "metadata": encoded(self.metadata),
            "children": encoded(children),
            "wait": encoded(self.wait),
            "delivered": self.delivered,
        }


# The tree below root :root (found once, by _ROOT) and the children of execution :id.
_SUBAGENT_BUDGET = RawStatement.compile(
    f"""
    WITH RECURSIVE tree AS (
        SELECT c.id, c.status FROM agent_executions c WHERE c.parent_id = :root
        UNION ALL
        SELECT c.id, c.status FROM agent_executions c JOIN tree ON c.parent_id = tree.id
    )
    SELECT u.tier,
           (SELECT count(*) FROM tree WHERE status NOT IN ({TERMINAL_SQL})) AS unfinished,
           (SELECT count(*) FROM agent_executions WHERE parent_id = :id) AS children
    FROM agent_executions root JOIN users u ON u.id = root.user_id
    WHERE root.id = :root
    """
)
# Through SQLAlchemy, not a raw statement: its first statement is what makes the connection
# send BEGIN (raw statements on an autocommit connection would each commit on their own).
_LOCK_TREE = text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:root))")
_TREE_LOCK_NAMESPACE = 7_301


_ROOT = text(
    """
    WITH RECURSIVE up AS (
        SELECT id, parent_id FROM agent_executions WHERE id = :id
        UNION ALL
        SELECT p.id, p.parent_id FROM agent_executions p JOIN up ON p.id = up.parent_id
    )
    SELECT id FROM up WHERE parent_id IS NULL
    """
).bindparams(bindparam("id", type_=UUID(as_uuid=True)))


async def _root_of(conn: AsyncConnection, execution_id: uuid.UUID) -> uuid.UUID:
    root: uuid.UUID = (await conn.execute(_ROOT, {"id": execution_id})).scalar_one()
    return root


@dataclass(frozen=True, slots=True)
class SubagentBudget:
    """How many subagents the tree of an execution runs now, and how many it has started."""

    root_id: uuid.UUID
    tier: str
    unfinished: int  # unfinished descendants of the root
    children: int  # children of the execution itself, finished or not


async def lock_subagent_budget(conn: AsyncConnection, execution_id: uuid.UUID) -> SubagentBudget:
    """Lock the execution's tree until the transaction ``conn`` is in ends, and count its
    subagents: the count is a statement of its own after the lock, so it sees every spawn
    committed before the lock was granted."""
    root = await _root_of(conn, execution_id)
    await conn.execute(_LOCK_TREE, {"namespace": _TREE_LOCK_NAMESPACE, "root": str(root)})
    row = await _SUBAGENT_BUDGET.fetchrow(conn, {"id": execution_id, "root": root})
    return SubagentBudget(root, row["tier"], row["unfinished"], row["children"])


@dataclass(frozen=True, slots=True)
class StoredLog:
    """A log row a step wrote, as the worker knows it (for its live event)."""

    id: int
    level: str
    event_type: str
    message: str
    context: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StepWritten:
    log_id: int
    created_at: datetime
    status: Status
    change: StatusChange | None  # set when the step ended or parked the execution
    entry_ids: list[int]  # the ids of the step's tool and warning rows, in order


async def claim_execution(
    conn: Connection, execution_id: uuid.UUID, expected_lease: int, worker_id: str
) -> Claim | None:
    """Take the execution for this worker, bumping its lease; None if it is not ours to run."""
    row = await _CLAIM.fetchrow(
        conn, {"id": execution_id, "lease": expected_lease, "worker_id": worker_id}
    )
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
        deliveries=[
            Delivery(d["id"], Signal(d["signal"]), d["payload"]) for d in row["deliveries"]
        ],
        lease=row["lease"],
        chunk_count=row["chunk_count"],
        status=Status(row["status"]),
        depth=row["depth"],
        workspace_id=row["workspace_id"],
        inherited=row["inherited"],
        change=None if row["log_id"] is None else StatusChange.from_row(row),
        token_usage=row["token_usage"],
        descendant_tokens=row["descendant_tokens"],
        root=None
        if row["root_id"] is None
        else RootTokens(row["root_id"], row["root_agent_type"], row["root_tree_tokens"]),
    )


async def commit_step(conn: Connection, step: StepCommit) -> StepWritten | None:
    """Append a step's messages and log and advance progress in one statement, fenced by the
    lease; a pending pause request parks the execution. None: the lease was lost, nothing was
    written."""
    row = await _COMMIT_STEP.fetchrow(conn, step.parameters())
    if row is None:
        return None
    change = None if row["log_id"] is None else StatusChange.from_row(row)
    return StepWritten(
        row["step_log_id"], row["step_created_at"], Status(row["status"]), change,
        list(row["entry_ids"]),
    )  # fmt: skip


async def roll_up_tokens(conn: Connection, root: uuid.UUID, tokens: int) -> int | None:
    """Add a subagent step's ``tokens`` to its root; the tree's tokens now (None: no root)."""
    row = await _ROLL_UP.fetchrow(conn, {"root": root, "tokens": tokens})
    return None if row is None else int(row["tree_tokens"])


async def fail_execution(
    conn: AsyncConnection, execution_id: uuid.UUID, lease: int, error: dict[str, Any]
) -> StatusChange | None:
    """End a running execution without a step (failure or limit); None if the lease was lost."""
    row = await _FAIL.fetchrow(
        conn,
        {
            "id": execution_id,
            "lease": lease,
            "message": f"Failed: {error['message']}",
            "error": json_serializer(error),
        },
    )
    return None if row is None else StatusChange.from_row(row)


async def record_heartbeats(conn: Connection, held: Mapping[uuid.UUID, int]) -> set[uuid.UUID]:
    """Refresh the heartbeat of every execution in ``held`` (id → lease) in one statement; the
    ids whose lease is still ours."""
    ids = list(held)
    rows = await _HEARTBEAT.fetch(conn, {"ids": ids, "leases": [held[i] for i in ids]})
    return {row["id"] for row in rows}
