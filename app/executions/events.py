"""Live events: what a committed step or status change tells subscribers, and where.

Every event is built from its ``agent_logs`` row (id, event type, context, time) by the
functions below, both when it is published live and when a stream replays it, so the two
cannot differ.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from redis.asyncio import Redis

from app.executions.publisher import publisher_for
from app.executions.transitions import STATUS_EVENT_TYPES, TERMINAL, EventType, StatusChange

ADMIN_CHANNEL = "admin.agents"


class EventName(StrEnum):
    """The ``event`` of a published message (and of an SSE frame)."""

    STEP_COMPLETED = "step.completed"
    STATUS_CHANGED = "status.changed"
    LOG = "log"


def execution_channel(execution_id: uuid.UUID | str) -> str:
    return f"agent.{execution_id}"


def user_channel(user_id: int) -> str:
    return f"user.{user_id}.agents"


class Event:
    """One message on the pub/sub channels; ``id`` is the ``agent_logs`` row id."""

    __slots__ = ("data", "id", "name")

    def __init__(self, name: EventName, log_id: int, data: dict[str, Any]) -> None:
        self.name = name
        self.id = log_id
        self.data = data

    def encode(self) -> bytes:
        return json.dumps(self.message(), default=str).encode()

    def message(self) -> dict[str, Any]:
        return {"event": self.name.value, "id": self.id, "data": self.data}


def decode_message(raw: bytes | str) -> list[dict[str, Any]]:
    """The events (``{"event", "id", "data"}``) of one message on a channel, in order."""
    message = json.loads(raw)
    return message if isinstance(message, list) else [message]


def encode_all(events: Sequence[Event]) -> bytes:
    """One message for ``events``: the event itself, or several as a JSON array, in order."""
    if len(events) == 1:
        return events[0].encode()
    return json.dumps([event.message() for event in events], default=str).encode()


class LogRow(Protocol):
    """What an event is built from: a stored ``agent_logs`` row."""

    @property
    def id(self) -> int: ...
    @property
    def level(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def context(self) -> dict[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...


def step_completed(
    execution_id: uuid.UUID, log_id: int, created_at: datetime, context: Mapping[str, Any]
) -> Event:
    """From a ``step_completed`` row; its context holds ``step_number`` and the step's facts."""
    facts = {key: value for key, value in context.items() if key != "step_number"}
    return Event(
        EventName.STEP_COMPLETED,
        log_id,
        {
            "execution_id": str(execution_id),
            "step_number": int(context["step_number"]),
            **facts,
            "timestamp": created_at.isoformat(),
        },
    )


def status_changed(
    execution_id: uuid.UUID,
    log_id: int,
    context: Mapping[str, Any],
    completed_at: datetime | None,
) -> Event:
    """From a status log row (context ``to``, ``step_count``, ``token_usage`` as of the change);
    ``completed_at`` is the execution's, shown once it is terminal."""
    status = str(context["to"])
    return Event(
        EventName.STATUS_CHANGED,
        log_id,
        {
            "execution_id": str(execution_id),
            "status": status,
            "step_count": int(context["step_count"]),
            "token_usage": int(context["token_usage"]),
            "completed_at": completed_at.isoformat()
            if completed_at and status in TERMINAL
            else None,
        },
    )


def of_change(change: StatusChange) -> Event:
    """The event of a status change a statement just made (and logged)."""
    return status_changed(
        change.execution_id, change.log_id, change.log_context, change.completed_at
    )


def is_status_change(event_type: str, context: Mapping[str, Any]) -> bool:
    return event_type in STATUS_EVENT_TYPES and "to" in context


def from_log(execution_id: uuid.UUID, row: LogRow, completed_at: datetime | None) -> Event:
    """The event a stored log row stands for, exactly as it was published live."""
    if row.event_type == EventType.STEP_COMPLETED:
        return step_completed(execution_id, row.id, row.created_at, row.context)
    if is_status_change(row.event_type, row.context):
        return status_changed(execution_id, row.id, row.context, completed_at)
    return Event(
        EventName.LOG,
        row.id,
        {
            "execution_id": str(execution_id),
            "level": row.level,
            "event_type": row.event_type,
            "message": row.message,
            "context": row.context,
            "timestamp": row.created_at.isoformat(),
        },
    )


async def publish(redis: Redis, execution_id: uuid.UUID, user_id: int, events: list[Event]) -> None:
    """Send events to the execution's, the owner's and the admins' channels: one message per
    channel (a step's events travel together, see :func:`encode_all`), in the round trip of
    ``redis``'s :class:`~app.executions.publisher.Publisher` (shared with other steps).

    The owner's channel, which follows all of a user's executions, carries their steps and
    status changes, not their ``log`` events (tool calls, warnings).
    """
    if not events:
        return
    everything = encode_all(events)
    messages = [(execution_channel(execution_id), everything), (ADMIN_CHANNEL, everything)]
    for_owner = [event for event in events if event.name is not EventName.LOG]
    if for_owner:
        owner = everything if len(for_owner) == len(events) else encode_all(for_owner)
        messages.append((user_channel(user_id), owner))
    await publisher_for(redis).send(redis, messages)
