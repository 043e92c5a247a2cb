"""What a committed change tells the rest of the system: jobs to enqueue, events to publish,
workers to stop, parents to wake.

The database already holds the change, so each effect runs on its own after the commit and a
failure is logged the same way and stops no other effect: a lost enqueue is made up by the sweep,
a lost event only delays subscribers (streams resume from the log), a lost stop is caught by the
lease at the worker's next write, a lost wake by the sweep's search for waiting parents.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app import metrics
from app.config import Settings
from app.db import after_commit, transaction_connection
from app.events import repository as events_repository
from app.executions import children, events
from app.executions.interrupts import control_channel
from app.executions.jobs import enqueue_chunk, enqueue_start_timer, enqueue_wait_timer
from app.executions.transitions import (
    CREATE,
    CREATE_SCHEDULED,
    CREATE_WAITING,
    RESUME_WAITING,
    TERMINAL,
    Signal,
    Status,
    StatusChange,
)
from app.outbound import service as outbound
from app.outbound.service import SUBSCRIBABLE

log = logging.getLogger(__name__)

_EFFECTS = "execution_effects"


_CREATIONS = frozenset(move.name for move in (CREATE, CREATE_WAITING, CREATE_SCHEDULED))


async def _count(change: StatusChange) -> None:
    if change.status in TERMINAL:
        metrics.EXECUTIONS_FINISHED.labels(change.agent_type, change.status.value).inc()
    else:
        metrics.EXECUTIONS_STARTED.labels(change.agent_type, change.queue).inc()


class Effects:
    """Effects collected while a change is made, run once it is committed (:meth:`run`)."""

    def __init__(self, redis: ArqRedis, db: AsyncEngine, settings: Settings) -> None:
        self.redis = redis
        self.db = db
        self.settings = settings
        self._pending: list[tuple[str, uuid.UUID, Callable[[], Awaitable[object]]]] = []

    def enqueue(self, execution_id: uuid.UUID, lease: int, queue: str, suffix: str = "") -> None:
        self._add(
            "enqueue",
            execution_id,
            lambda: enqueue_chunk(self.redis, execution_id, lease, queue, suffix=suffix),
        )

    def publish(self, execution_id: uuid.UUID, user_id: int, *published: events.Event) -> None:
        self._add(
            "publish",
            execution_id,
            lambda: events.publish(self.redis, execution_id, user_id, list(published)),
        )

    def stop_worker(self, execution_id: uuid.UUID, signal: Signal) -> None:
        """Interrupt the step a worker may be running (cancel, kill)."""
        self._add(
            "stop",
            execution_id,
            lambda: self.redis.publish(control_channel(execution_id), signal.value),
        )

    def wake_parent(self, parent_id: uuid.UUID) -> None:
        """Resume the parent if this was the last of its subagents to finish."""

        async def wake() -> None:
            change = await children.wake_parent(self.db, parent_id)
            if change is not None:
                self.announce(change)

        self._add("wake", parent_id, wake)

    def announce(
        self,
        change: StatusChange,
        *,
        stop: Signal | None = None,
        before: Sequence[events.Event] = (),
        wake_parent: bool = True,
    ) -> None:
        """The consequences of a status change: its event (after ``before``, in one publish); a
        job once it is ``pending``; and once it is terminal, its parent's wake (unless
        ``wake_parent`` is False: the parent ends too) and (with ``stop``) the interruption of
        a worker still running it."""
        if stop is not None and change.status in TERMINAL:
            self.stop_worker(change.execution_id, stop)
        if change.move in _CREATIONS or change.status in TERMINAL:
            self._add("count", change.execution_id, lambda: _count(change))
        if change.status is Status.PENDING:
            self.enqueue(change.execution_id, change.lease, change.queue)
        self.publish(change.execution_id, change.user_id, *before, events.of_change(change))
        if wake_parent and change.status in TERMINAL and change.parent_id is not None:
            self.wake_parent(change.parent_id)
        if change.status is Status.AWAITING_EVENT and change.wait:
            self._waiting(change, change.wait)
        if change.status in SUBSCRIBABLE and change.subscribed:
            queue = self.settings.queues.default
            self._add(
                "notify webhook subscribers",
                change.execution_id,
                lambda: outbound.notify(self.db, self.redis, queue, change),
            )
        if change.status is Status.SCHEDULED and change.run_at is not None:
            run_at = change.run_at
            self._add(
                "schedule the start",
                change.execution_id,
                lambda: enqueue_start_timer(
                    self.redis, change.execution_id, change.lease, change.queue, run_at
                ),
            )

    def _waiting(self, change: StatusChange, wait: dict[str, Any]) -> None:
        """An execution started (or, resumed, went back to) waiting: its timer; an event kept
        for it; its subagents, which may all have finished while it was paused."""
        execution_id = change.execution_id
        if "deadline" in wait:
            deadline = datetime.fromisoformat(wait["deadline"])
            self._add(
                "schedule the end of the wait",
                execution_id,
                lambda: enqueue_wait_timer(
                    self.redis, execution_id, change.lease, change.queue, deadline
                ),
            )
        buffer = self.settings.events.buffer_seconds
        if "event" in wait and buffer > 0:

            async def take_kept() -> None:
                async with transaction_connection(self.db) as c:
                    await events_repository.lock_events(c, change.user_id, wait["event"])
                    taken = await events_repository.take_kept_event(
                        c, execution_id, wait["event"], buffer
                    )
                if taken is not None:
                    self.announce(taken)

            self._add("take a kept event", execution_id, take_kept)
        if "children" in wait and change.move == RESUME_WAITING.name:
            self.wake_parent(execution_id)

    async def run(self) -> None:
        """Run every effect, including those that running one adds; each failure is logged."""
        while self._pending:
            what, execution_id, effect = self._pending.pop(0)
            try:
                await effect()
            except Exception:
                log.warning("could not %s for execution %s", what, execution_id, exc_info=True)

    def _add(
        self, what: str, execution_id: uuid.UUID, effect: Callable[[], Awaitable[object]]
    ) -> None:
        self._pending.append((what, execution_id, effect))


def after_commit_effects(session: AsyncSession, redis: ArqRedis, settings: Settings) -> Effects:
    """The effects of the session's transaction, run once it has committed."""
    effects: Effects | None = session.info.get(_EFFECTS)
    if effects is None:
        bind = session.bind
        db = bind.engine if isinstance(bind, AsyncConnection) else bind
        assert isinstance(db, AsyncEngine)
        effects = session.info[_EFFECTS] = Effects(redis, db, settings)
        after_commit(session, effects.run)
    return effects


async def announce_committed(
    db: AsyncEngine, redis: ArqRedis, settings: Settings, change: StatusChange | None
) -> bool:
    """Run the effects of a change a statement has just committed; False if it made none."""
    if change is None:
        return False
    effects = Effects(redis, db, settings)
    effects.announce(change)
    await effects.run()
    return True
