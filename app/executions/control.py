"""Steering executions: pause, resume, cancel, force kill and answering a question.

Each request makes its move (see ``transitions.py``) in one conditional UPDATE, so two racing
requests cannot both win, and an illegal request changes nothing (409 with the current status).
A pause of a running execution is a request: a signal row the worker consumes at its next step
boundary. Cancel and kill take effect at once and bump the lease, so the worker (even a hung one)
can never write again; the worker hears about it on the execution's control channel and
interrupts the step. An answer waits for the worker, which hands it to the agent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.config import Settings
from app.errors import Conflict
from app.executions import repository, subagent_repository
from app.executions.effects import after_commit_effects
from app.executions.repository import DEFERRED
from app.executions.transitions import Signal, Status

# Requests that are already satisfied: accepted, nothing changes.
ALREADY_DONE: dict[Signal, set[Status]] = {
    Signal.PAUSE: {Status.PAUSED},
    Signal.CANCEL: {Status.CANCELLED},
    Signal.KILL: {Status.CANCELLED},
}


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
    """Carry out ``signal`` on a visible execution; its effects run after commit."""
    payload = payload or {}
    change = await repository.apply_control(
        session, execution_id, signal, payload=payload, user_id=user.id
    )
    if change is not None:
        effects = after_commit_effects(session, redis, settings)
        effects.announce(change, stop=signal)
        if signal in (Signal.CANCEL, Signal.KILL):
            # Their parents are among them: none has a parent left to wake.
            for descendant in await subagent_repository.cancel_descendants(session, execution_id):
                effects.announce(descendant, stop=Signal.CANCEL, wake_parent=False)
        return Outcome(change.status, signal)
    current = await repository.current_status(session, execution_id)
    if current in ALREADY_DONE.get(signal, set()):
        return Outcome(current, signal)
    if signal in DEFERRED and current in DEFERRED[signal].sources:
        if await repository.request_control(
            session, execution_id, signal, payload=payload, user_id=user.id
        ):
            return Outcome(current, signal)
        current = await repository.current_status(session, execution_id)
    raise IllegalTransition(
        f"Cannot {signal.value} an execution that is {current.value}.",
        current_status=current.value,
        signal=signal.value,
    )
