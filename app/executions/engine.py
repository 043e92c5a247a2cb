"""The execution engine: one job advances one execution by at most one chunk of steps.

claim (lease + 1) → rebuild the agent and its state → for each step: one statement commits the
step's messages, log and progress, fenced by the lease → publish → after ``chunk_size`` steps,
re-enqueue under the new lease. A job is safe to run twice: the loser of the claim does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any, TypedDict

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.agents.agent import Agent, StepRecord
from app.agents.bash_tool import kill_workspace_processes
from app.agents.errors import AgentError
from app.agents.registry import build_agent
from app.agents.state import AgentState
from app.config import Settings
from app.executions import events, worker_repository
from app.executions.children import (
    announce_cancelled,
    cancel_descendants,
    child_rows,
    start_children,
    wake_parent,
)
from app.executions.interrupts import RunningChunks
from app.executions.jobs import enqueue_chunk
from app.executions.status import TERMINAL, Status
from app.executions.worker_repository import Claim

log = logging.getLogger(__name__)

_LIMIT_ERRORS = {
    "max_steps": "max_steps_exceeded",
    "max_tokens": "max_tokens_exceeded",
    "timeout": "timeout_exceeded",
}


class WorkerContext(TypedDict):
    """Resources a worker process shares between its jobs (arq adds ``redis``)."""

    settings: Settings
    db: AsyncEngine
    redis: ArqRedis
    http: httpx.AsyncClient
    worker_id: str
    running: RunningChunks


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
        self.workspace = self.settings.workspace_base / str(claim.id)

    async def run(self) -> None:
        if self.claim.status_log_id is not None:
            await self._publish(
                events.status_changed(
                    self.id,
                    self.claim.status_log_id,
                    Status(self.claim.status),
                    step_count=self.claim.step_count,
                    token_usage=self.claim.token_usage,
                    completed_at=None,
                )
            )
        if self.claim.status != Status.RUNNING:
            return  # paused at the claim: a pause was requested while it waited for a worker
        spec = self.settings.spec_for(self.claim.agent_type)
        if spec is None:
            await self._fail("unknown_agent_type", f"no agent type {self.claim.agent_type!r}")
            return
        if self.claim.chunk_count > self.settings.limits.max_chunks:
            limit = self.settings.limits.max_chunks
            await self._fail("max_chunks_exceeded", f"stopped after {limit} chunks")
            return
        agent = build_agent(
            spec,
            workspace=self.workspace,
            http=self.ctx["http"],
            environ=os.environ,
            depth=self.claim.depth,
            subagents=self.settings.subagents,
        )
        if self.claim.state_snapshot is None:
            state = agent.initial_state(str(self.claim.input.get("prompt", "")))
            persisted = 0
        else:
            state = AgentState.restore(self.claim.state_snapshot, self.claim.messages)
            persisted = len(self.claim.messages)
        await self._drive(agent, state, persisted)

    async def _drive(self, agent: Agent, state: AgentState, persisted: int) -> None:
        steps = 0
        iterator = agent.iterate(state)
        try:
            async for record in iterator:
                steps += 1
                persisted, status = await self._commit(record, persisted)
                if status != Status.RUNNING:
                    return  # completed, or parked (paused, awaiting input)
                if steps >= self.settings.limits.chunk_size:
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
        try:
            await enqueue_chunk(self.redis, self.id, self.lease, self.claim.queue)
        except Exception:
            # The checkpoint is committed; the sweep re-enqueues a running execution whose next
            # job is missing once its heartbeat is stale. Redis trouble delays, never fails it.
            log.warning("could not enqueue the next chunk of %s", self.id, exc_info=True)

    async def _commit(self, record: StepRecord, persisted: int) -> tuple[int, Status]:
        """Commit the step; returns how many messages are now stored and the new status."""
        state = record.state
        is_final = state.stop_reason == "final_answer"
        asks = state.stop_reason == "awaiting_input"
        delegates = state.stop_reason == "awaiting_subagents"
        finish_status = (
            Status.COMPLETED if is_final
            else Status.AWAITING_INPUT if asks
            else Status.AWAITING_EVENT if delegates
            else None
        )  # fmt: skip
        children = (
            child_rows(self.settings, [t.model_dump() for t in state.pending_subagents])
            if delegates
            else None
        )
        context = {
            "step_number": record.number,
            "step_type": record.kind,
            "has_tool_calls": bool(record.tool_names),
            "tool_names": record.tool_names,
            "tokens_used": record.tokens_used,
        }
        async with self.db.connect() as conn:
            written = await worker_repository.commit_step(
                conn,
                execution_id=self.id,
                lease=self.lease,
                step_count=state.step_count,
                usage=state.usage.model_dump(),
                snapshot=state.snapshot(),
                first_seq=persisted,
                messages=[
                    m.model_dump(mode="json", exclude_defaults=True)
                    for m in state.messages[persisted:]
                ],
                log_message=f"Step {record.number} completed",
                log_context=context,
                finish_status=finish_status,
                output={"response": state.final_answer} if is_final else None,
                metadata={"question": state.pending_question} if asks else None,
                children=children,
            )
        if written is None:
            raise LeaseLost
        published = [
            events.step_completed(
                self.id,
                written.log_id,
                written.created_at,
                {k: v for k, v in context.items() if k != "step_number"},
                record.number,
            )
        ]
        status = Status(written.status)
        if written.status_log_id is not None:
            published.append(
                events.status_changed(
                    self.id,
                    written.status_log_id,
                    status,
                    step_count=state.step_count,
                    token_usage=state.usage.total_tokens,
                    completed_at=written.completed_at,
                )
            )
        await self._publish(*published)
        if children:
            await start_children(self.redis, children)
        if status in TERMINAL:
            await self._wake_parent()
        return len(state.messages), status

    async def _fail(self, error_type: str, message: str) -> None:
        async with self.db.connect() as conn:
            finished = await worker_repository.finish_execution(
                conn,
                execution_id=self.id,
                lease=self.lease,
                status=Status.FAILED,
                message=f"Failed: {message}",
                error={"type": error_type, "message": message},
            )
        if finished is None:
            raise LeaseLost
        async with self.db.connect() as conn:
            orphans = await cancel_descendants(conn, self.id)
        await announce_cancelled(self.redis, orphans)
        await self._wake_parent()
        await self._publish(
            events.status_changed(
                self.id,
                finished.log_id,
                Status.FAILED,
                step_count=finished.step_count,
                token_usage=finished.token_usage,
                completed_at=finished.completed_at,
            )
        )

    async def _wake_parent(self) -> None:
        """A child that finished may be the last its parent waits for."""
        if self.claim.parent_id is None:
            return
        try:
            await wake_parent(self.db, self.redis, self.settings, self.claim.parent_id)
        except Exception:
            # The sweep wakes parents whose children have all finished.
            log.warning("could not wake the parent of %s", self.id, exc_info=True)

    async def fail_from(self, exc: BaseException) -> None:
        if isinstance(exc, AgentError):
            await self._fail(exc.error_type, str(exc))
        else:
            # Internal details (driver messages, paths) stay in the worker log.
            await self._fail(
                "internal_error",
                f"the worker hit an unexpected {type(exc).__name__}; see the worker log",
            )

    async def _publish(self, *published: events.Event) -> None:
        """Tell subscribers; the database already has it, so a Redis hiccup only delays them."""
        try:
            await events.publish(self.redis, self.id, self.claim.user_id, list(published))
        except Exception:
            log.warning("could not publish events for %s", self.id, exc_info=True)


async def _keep_alive(
    db: AsyncEngine,
    execution_id: uuid.UUID,
    lease: int,
    interval: float,
    on_lost: Callable[[], Any],
) -> None:
    """Refresh the heartbeat while a step runs; stop the chunk when the lease is gone."""
    while True:
        await asyncio.sleep(interval)
        try:
            async with db.connect() as conn:
                alive = await worker_repository.record_heartbeat(conn, execution_id, lease)
        except Exception:
            log.warning("heartbeat for %s failed", execution_id, exc_info=True)
            continue
        if not alive:
            on_lost()
            return


async def run_execution(ctx: WorkerContext, execution_id: str, lease: int) -> str:
    """The arq job: advance ``execution_id`` if its lease is still ``lease``."""
    settings = ctx["settings"]
    async with ctx["db"].connect() as conn:
        claim = await worker_repository.claim_execution(
            conn, uuid.UUID(execution_id), lease, ctx["worker_id"]
        )
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
    keep_alive = asyncio.create_task(
        _keep_alive(ctx["db"], claim.id, claim.lease, settings.worker.heartbeat_interval, stop)
    )
    try:
        await task
    except LeaseLost:
        return "lease lost"
    except asyncio.CancelledError:
        if taken_away:
            return "lease lost"
        # The worker is shutting down: hand the execution over from its last committed step
        # now, rather than after its heartbeat goes stale.
        with contextlib.suppress(Exception):
            await asyncio.shield(enqueue_chunk(ctx["redis"], claim.id, claim.lease, claim.queue))
        raise
    except Exception as exc:
        log.exception("execution %s failed", execution_id)
        with contextlib.suppress(LeaseLost):
            await runner.fail_from(exc)
        return "failed"
    finally:
        running.discard(claim.id)
        keep_alive.cancel()
        # No process a bash call started outlives the job: the next chunk may run elsewhere,
        # and a cancelled or finished execution must leave nothing running.
        with contextlib.suppress(Exception):
            await asyncio.shield(kill_workspace_processes(runner.workspace))
    return "ok"
