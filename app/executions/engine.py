"""The execution engine: one job advances one execution by at most one chunk of steps.

claim (lease + 1) → rebuild the agent and its state → for each step: one statement commits the
step's messages, log and progress, fenced by the lease → publish → after ``chunk_size`` steps,
re-enqueue under the new lease. A job is safe to run twice: the loser of the claim does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any, TypedDict

import asyncpg
import httpx
from arq.connections import ArqRedis
from arq.worker import Retry
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.agents.agent import Agent, StepRecord
from app.agents.bash_tool import kill_processes
from app.agents.drivers.clients import ModelHttpClient
from app.agents.errors import AgentError
from app.agents.registry import build_agent
from app.agents.sandbox import Sandbox
from app.agents.spec import AgentTypeSpec
from app.agents.state import AgentState, EventOutcome, SubagentResult
from app.agents.subagents import refuse_subagents
from app.config import Settings
from app.db import driver_connection, is_transient, transaction_connection
from app.executions import events, subagent_repository, worker_repository
from app.executions.children import new_children
from app.executions.effects import Effects
from app.executions.heartbeat import Heartbeat
from app.executions.interrupts import RunningChunks
from app.executions.jobs import enqueue_chunk
from app.executions.transitions import ASK, COMPLETE, DELEGATE, WAIT, Signal, Status
from app.executions.worker_repository import (
    Claim,
    NewChild,
    StepCommit,
    StoredLog,
    SubagentBudget,
)

log = logging.getLogger(__name__)

# Transient infrastructure failures a chunk is retried after (1, 2, 4, 8, 16 s apart): about
# half a minute of a database or Redis restart; longer, and the sweep takes over.
MAX_TRANSIENT_RETRIES = 5
TRANSIENT_BACKOFF = 1.0

_LIMIT_ERRORS = {
    "max_steps": "max_steps_exceeded",
    "max_tokens": "max_tokens_exceeded",
    "timeout": "timeout_exceeded",
}
# The move a step makes when it stops iteration (other stops are failures).
_FINISHING_MOVES = {
    "final_answer": COMPLETE,
    "awaiting_input": ASK,
    "awaiting_subagents": DELEGATE,
    "awaiting_event": WAIT,
}
# Stop reasons of an agent that waits for a delivery.
_WAITING = {"awaiting_input", "awaiting_subagents", "awaiting_event"}
_EVENT_ENDINGS = {Signal.EVENT, Signal.EVENT_TIMEOUT}


class WorkerContext(TypedDict):
    """Resources a worker process shares between its jobs (arq adds ``redis``)."""

    settings: Settings
    db: AsyncEngine
    redis: ArqRedis
    http: httpx.AsyncClient
    models: ModelHttpClient
    worker_id: str
    running: RunningChunks
    sandbox: Sandbox
    heartbeat: Heartbeat
    # The step statements' pool (asyncpg; ``db`` is SQLAlchemy's, for everything else).
    pg: asyncpg.Pool
    # One per pooled connection: steps queue here, cheaply, rather than in the pool's checkout.
    db_slots: asyncio.Semaphore
    # Set when the process stops (a signal, or over its memory cap): chunks end at their next
    # step boundary and are re-enqueued for another process.
    draining: asyncio.Event


def step_connection(ctx: WorkerContext) -> AbstractAsyncContextManager[Any]:
    """A connection of the step statements' pool (asyncpg)."""
    return driver_connection(ctx["pg"], ctx["settings"].worker.db_pool_timeout)


class LeaseLost(Exception):
    """Another worker (or a kill) took the execution; this one must stop writing."""


class ChunkRunner:
    """Runs one claimed execution for one chunk."""

    def __init__(self, ctx: WorkerContext, claim: Claim) -> None:
        self.ctx = ctx
        self.settings = ctx["settings"]
        self.db = ctx["db"]
        self.redis = ctx["redis"]
        self.claim = claim
        self.id = claim.id
        self.lease = claim.lease
        # A subagent with workspace = "parent" works in its parent's directory.
        self.workspace_id = claim.workspace_id or claim.id
        self.workspace = self.settings.workspace_base / str(self.workspace_id)
        self.tree_tokens: int | None = None  # a subagent's: its tree's, after its last step

    async def run(self) -> None:
        if self.claim.change is not None:
            effects = self._effects()
            effects.announce(self.claim.change)
            await effects.run()
        if self.claim.status is not Status.RUNNING:
            return  # paused at the claim: a pause was requested while it waited for a worker
        spec = self.settings.spec_for(self.claim.agent_type)
        if spec is None:
            await self._fail("unknown_agent_type", f"no agent type {self.claim.agent_type!r}")
            return
        if self.claim.inherited:
            spec = spec.inherit(self.claim.inherited)
        self.tree_max_tokens = self._tree_max_tokens(spec)
        spec = spec.model_copy(update={"max_tokens": self._tokens_left(spec)})
        self.spec = spec
        if self.claim.chunk_count > self.settings.limits.max_chunks:
            limit = self.settings.limits.max_chunks
            await self._fail("max_chunks_exceeded", f"stopped after {limit} chunks")
            return
        agent = build_agent(
            spec,
            workspace=self.workspace,
            http=self.ctx["models"],
            environ=self.settings.provider_keys(),
            depth=self.claim.depth,
            subagents=self.settings.subagents,
            sandbox=self.ctx["sandbox"],
            network=self.ctx["sandbox"].allows_network(self.claim.agent_type),
            process_owner=str(self.id),
        )
        if self.claim.state_snapshot is None:
            state = agent.initial_state(str(self.claim.input.get("prompt", "")))
            persisted = 0
        else:
            state = AgentState.restore(self.claim.state_snapshot, self.claim.messages)
            persisted = len(self.claim.messages)
        delivered = self._deliver(agent, state)
        if state.stop_reason in _WAITING:
            # Woken, but what woke it committed after the claim read the deliveries: the next
            # claim (under the new lease) sees it.
            await self._enqueue_next_chunk()
            return
        await self._drive(agent, state, persisted, delivered)

    def _tree_max_tokens(self, spec: AgentTypeSpec) -> int:
        """The tokens the whole tree may use: its root's ``max_tokens``."""
        root = self.claim.root
        if root is None:
            return spec.max_tokens
        root_spec = self.settings.spec_for(root.agent_type)
        return spec.max_tokens if root_spec is None else root_spec.max_tokens

    def _tokens_left(self, spec: AgentTypeSpec) -> int:
        """The ``max_tokens`` the agent runs with in this chunk: its own, less what the rest of
        its tree has used (a root: its subagents; a subagent: its root and every other
        subagent), so the tree stops at its root's budget."""
        root = self.claim.root
        own = self.claim.token_usage
        used_elsewhere = self.claim.descendant_tokens if root is None else root.tree_tokens - own
        return max(0, min(spec.max_tokens, self.tree_max_tokens - used_elsewhere))

    def _deliver(self, agent: Agent, state: AgentState) -> list[int]:
        """Hand the agent what woke it (an answer, its subagents' results, an event or the end
        of its wait); the first step that commits marks these deliveries done."""
        for delivery in self.claim.deliveries:
            try:
                if delivery.signal is Signal.INPUT:
                    agent.answer(state, str(delivery.payload.get("answer", "")))
                elif delivery.signal is Signal.SUBAGENT_RESULTS:
                    results = [
                        SubagentResult.model_validate(r) for r in delivery.payload["results"]
                    ]
                    agent.receive_subagent_results(state, results, self._summary_limits())
                elif delivery.signal in _EVENT_ENDINGS:
                    outcome = EventOutcome.model_validate(
                        {**delivery.payload, "timed_out": delivery.signal is Signal.EVENT_TIMEOUT}
                    )
                    agent.receive_event(state, outcome)
            except ValueError:
                log.warning(
                    "execution %s: dropped a %s delivery its agent was not waiting for",
                    self.id, delivery.signal, exc_info=True,
                )  # fmt: skip
        return [delivery.id for delivery in self.claim.deliveries]

    def _summary_limits(self) -> dict[str, int]:
        """How much of each subagent's result its parent reads, where the subagent's spec
        says (otherwise the parent type's ``summary_max_chars``)."""
        return {
            name: spec.summary_max_chars
            for name, spec in self.settings.subagents.items()
            if "summary_max_chars" in spec.model_fields_set
        }

    async def _drive(
        self, agent: Agent, state: AgentState, persisted: int, delivered: list[int]
    ) -> None:
        steps = 0
        self._step_started = time.monotonic()
        iterator = agent.iterate(state)
        try:
            async for record in iterator:
                steps += 1
                persisted, status = await self._commit(record, persisted, delivered)
                delivered = []
                if status is not Status.RUNNING:
                    return  # completed, or parked (paused, awaiting input or subagents)
                if self.tree_tokens is not None and self.tree_tokens >= self.tree_max_tokens:
                    # Siblings running at once spent the tree's budget.
                    await self._fail(
                        "max_tokens_exceeded",
                        f"its tree of subagents used {self.tree_tokens} tokens, its root's "
                        f"max_tokens is {self.tree_max_tokens}",
                    )
                    return
                if steps >= self.settings.limits.chunk_size or self.ctx["draining"].is_set():
                    await self._enqueue_next_chunk()
                    return
        finally:
            await iterator.aclose()
        reason = state.stop_reason
        error_type = _LIMIT_ERRORS.get(reason or "", "stopped")
        await self._fail(
            error_type, f"stopped by the {reason} limit after {state.step_count} steps"
        )

    async def _enqueue_next_chunk(self) -> None:
        effects = self._effects()
        effects.enqueue(self.id, self.lease, self.claim.queue)
        await effects.run()

    async def _commit(
        self, record: StepRecord, persisted: int, delivered: list[int]
    ) -> tuple[int, Status]:
        """Commit the step; returns how many messages are now stored and the new status.

        A step that starts subagents is committed under its tree's lock, after checking the
        subagent limits: over them, the model reads an error instead and the run goes on.
        """
        state = record.state
        if state.stop_reason == "awaiting_subagents":
            # On SQLAlchemy's connections, not holding a step slot while it waits for one.
            async with transaction_connection(self.db) as conn:
                budget = await worker_repository.lock_subagent_budget(conn, self.id)
                refusal = self._subagent_refusal(budget, len(state.pending_subagents))
                if refusal is not None:
                    refuse_subagents(state, refusal)
                step, children = self._step_commit(record, persisted, delivered)
                written = await worker_repository.commit_step(conn, step)
        else:
            step, children = self._step_commit(record, persisted, delivered)
            async with self.ctx["db_slots"], step_connection(self.ctx) as conn:
                written = await worker_repository.commit_step(conn, step)
        if written is None:
            raise LeaseLost
        root = self.claim.root
        if root is not None and record.tokens_used:
            async with step_connection(self.ctx) as conn:
                self.tree_tokens = await worker_repository.roll_up_tokens(
                    conn, root.id, record.tokens_used
                )
        effects = self._effects()
        # The step's rows share its statement's time (now() is the transaction's).
        step_events = [
            events.from_log(
                self.id,
                StoredLog(log_id, e.level, e.event_type, e.message, e.context, written.created_at),
                None,
            )
            for log_id, e in zip(written.entry_ids, record.logs, strict=True)
        ]
        step_events.append(
            events.step_completed(self.id, written.log_id, written.created_at, step.log_context)
        )
        if written.change is None:
            effects.publish(self.id, self.claim.user_id, *step_events)
        else:
            effects.announce(written.change, before=step_events)
        for child in children or []:
            effects.enqueue(child.id, 0, child.queue)
            metrics.EXECUTIONS_STARTED.labels(child.agent_type, child.queue).inc()
        await effects.run()
        self._observe(record)
        return len(state.messages), written.status

    def _observe(self, record: StepRecord) -> None:
        """The step's metrics: its model call, tokens and duration (from the previous step's
        commit, or the chunk's start, to this one's)."""
        spec = self.spec
        now = time.monotonic()
        metrics.STEPS.labels(self.claim.agent_type).observe(now - self._step_started)
        self._step_started = now
        metrics.MODEL_CALLS.labels(spec.provider, spec.model).observe(record.model_seconds)
        tokens = metrics.TOKENS
        tokens.labels(spec.provider, spec.model, "input").inc(record.usage.input_tokens)
        tokens.labels(spec.provider, spec.model, "output").inc(record.usage.output_tokens)

    def _subagent_refusal(self, budget: SubagentBudget, asked: int) -> str | None:
        """Why the subagents a step asks for may not start, or None."""
        limit = self.settings.tier_limits(budget.tier).max_descendants
        if budget.unfinished + asked > limit:
            return (
                f"subagent limit reached: {budget.unfinished} subagent(s) of this task are "
                f"still running and at most {limit} may run at once; wait for them or do the "
                "work yourself"
            )
        most = self.settings.limits.max_children
        if budget.children + asked > most:
            return (
                f"subagent limit reached: this agent has started {budget.children} of at most "
                f"{most} subagents; do the rest of the work yourself"
            )
        return None

    def _step_commit(
        self, record: StepRecord, persisted: int, delivered: list[int]
    ) -> tuple[StepCommit, list[NewChild] | None]:
        """What the step writes, and the subagents it creates."""
        state = record.state
        finish = _FINISHING_MOVES.get(state.stop_reason or "")
        children: list[NewChild] | None = None
        wait: dict[str, Any] | None = None
        if finish is DELEGATE:
            children = new_children(
                self.settings,
                state.pending_subagents,
                parent=self.spec,
                parent_workspace=self.workspace_id,
            )
            wait = {"children": [str(child.id) for child in children]}
        elif finish is WAIT and state.pending_event is not None:
            pending = state.pending_event
            wait = {
                "event": pending.event_type,
                "key": pending.key,
                "timeout_seconds": pending.timeout_seconds,
            }
        step = StepCommit(
            execution_id=self.id,
            lease=self.lease,
            step_count=state.step_count,
            usage=state.usage.model_dump(),
            snapshot=state.snapshot(),
            first_seq=persisted,
            messages=[
                m.model_dump(mode="json", exclude_defaults=True) for m in state.messages[persisted:]
            ],
            log_context={
                "step_number": record.number,
                "step_type": record.kind,
                "has_tool_calls": bool(record.tool_names),
                "tool_names": record.tool_names,
                "tokens_used": record.tokens_used,
                "token_usage": state.usage.total_tokens,
            },
            entries=[entry.row() for entry in record.logs],
            finish=finish,
            output={"response": state.final_answer} if finish is COMPLETE else None,
            metadata={"question": state.pending_question} if finish is ASK else None,
            children=children,
            wait=wait,
            delivered=delivered or None,
        )
        return step, children

    async def _fail(self, error_type: str, message: str) -> None:
        error = {"type": error_type, "message": message}
        async with self.db.connect() as conn:
            failed = await worker_repository.fail_execution(conn, self.id, self.lease, error)
            if failed is None:
                raise LeaseLost
            orphans = await subagent_repository.cancel_descendants(conn, self.id)
        effects = self._effects()
        effects.announce(failed)
        for orphan in orphans:
            effects.announce(orphan, stop=Signal.CANCEL, wake_parent=False)
        await effects.run()

    async def fail_from(self, exc: BaseException) -> None:
        if isinstance(exc, AgentError):
            await self._fail(exc.error_type, str(exc))
        else:
            # Internal details (driver messages, paths) stay in the worker log.
            await self._fail(
                "internal_error",
                f"the worker hit an unexpected {type(exc).__name__}; see the worker log",
            )

    def _effects(self) -> Effects:
        return Effects(self.redis, self.db, self.settings)


async def _after_error(
    ctx: WorkerContext, runner: ChunkRunner, exc: Exception, retries: int
) -> str:
    """A chunk raised: retry it if PostgreSQL or Redis went away for a moment (not the agent's
    failure; the next job continues from the last committed step, and a lost Redis leaves it
    to the sweep), else fail the execution."""
    claim = runner.claim
    if is_transient(exc) and retries < MAX_TRANSIENT_RETRIES:
        log.warning("execution %s: transient %s, retrying", claim.id, type(exc).__name__)
        with contextlib.suppress(Exception):
            await enqueue_chunk(
                ctx["redis"], claim.id, claim.lease, claim.queue,
                suffix=f":retry{retries + 1}", delay=TRANSIENT_BACKOFF * 2**retries,
                retries=retries + 1,
            )  # fmt: skip
        return "retry"
    log.error("execution %s failed", claim.id, exc_info=exc)
    with contextlib.suppress(LeaseLost):
        await runner.fail_from(exc)
    return "failed"


async def run_execution(ctx: WorkerContext, execution_id: str, lease: int, retries: int = 0) -> str:
    """The arq job: advance ``execution_id`` if its lease is still ``lease``. ``retries``
    counts the transient infrastructure failures that came before this job."""
    settings = ctx["settings"]
    try:
        async with ctx["db_slots"], step_connection(ctx) as conn:
            claim = await worker_repository.claim_execution(
                conn, uuid.UUID(execution_id), lease, ctx["worker_id"]
            )
    except Exception as exc:
        if not is_transient(exc):
            raise
        # Nothing changed: the same job runs again later (arq's own retry, up to max_tries).
        raise Retry(defer=TRANSIENT_BACKOFF * 2**retries) from exc
    if claim is None:
        return "skipped"
    runner = ChunkRunner(ctx, claim)
    taken_away = False

    def stop() -> None:
        """The lease is gone (cancel, kill, or another worker): stop at once, write nothing."""
        nonlocal taken_away
        taken_away = True
        task.cancel()

    task = asyncio.ensure_future(runner.run())
    running = ctx["running"]
    running.add(claim.id, stop)
    ctx["heartbeat"].hold(claim.id, claim.lease, stop)
    metrics.IN_FLIGHT.inc()
    try:
        await task
    except LeaseLost:
        return "lease lost"
    except asyncio.CancelledError:
        if taken_away:
            return "lease lost"
        # The worker is shutting down: hand the execution over from its last committed step
        # now, rather than after its heartbeat goes stale.
        handover = Effects(ctx["redis"], ctx["db"], settings)
        handover.enqueue(claim.id, claim.lease, claim.queue)
        await asyncio.shield(handover.run())
        raise
    except Exception as exc:
        return await _after_error(ctx, runner, exc, retries)
    finally:
        running.discard(claim.id)
        ctx["heartbeat"].release(claim.id)
        metrics.IN_FLIGHT.dec()
        # No process a bash call started outlives the job: the next chunk may run elsewhere,
        # and a cancelled or finished execution must leave nothing running.
        with contextlib.suppress(Exception):
            await asyncio.shield(kill_processes(str(runner.id)))
    return "ok"
