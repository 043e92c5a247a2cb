"""Live events: what a committed step or status change tells subscribers, and where."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

STEP_COMPLETED = "step.completed"
STATUS_CHANGED = "status.changed"
ADMIN_CHANNEL = "admin.agents"
LOG = "log"


def execution_channel(execution_id: uuid.UUID | str) -> str:
    return f"agent.{execution_id}"


def user_channel(user_id: int) -> str:
    return f"user.{user_id}.agents"


class Event:
    """One message on the pub/sub channels; ``id`` is the ``agent_logs`` row id."""

    __slots__ = ("data", "id", "name")

    def __init__(self, name: str, log_id: int, data: dict[str, Any]) -> None:
        self.name = name
        self.id = log_id
        self.data = data

    def encode(self) -> bytes:
        return json.dumps(
            {"event": self.name, "id": self.id, "data": self.data}, default=str
        ).encode()


def step_completed(
    execution_id: uuid.UUID,
    log_id: int,
    created_at: datetime,
    context: dict[str, Any],
    step_number: int,
) -> Event:
    return Event(
        STEP_COMPLETED,
        log_id,
        {
            "execution_id": str(execution_id),
            "step_number": step_number,
            **context,
            "timestamp": created_at.isoformat(),
        },
    )


def status_changed(
    execution_id: uuid.UUID,
    log_id: int,
    status: str,
    *,
    step_count: int,
    token_usage: int,
    completed_at: datetime | None,
) -> Event:
    return Event(
        STATUS_CHANGED,
        log_id,
        {
            "execution_id": str(execution_id),
            "status": status,
            "step_count": step_count,
            "token_usage": token_usage,
            "completed_at": completed_at.isoformat() if completed_at else None,
        },
    )


async def publish(redis: Redis, execution_id: uuid.UUID, user_id: int, events: list[Event]) -> None:
    """Send events to the execution's, the owner's and the admins' channels in one round trip."""
    if not events:
        return
    channels = (execution_channel(execution_id), user_channel(user_id), ADMIN_CHANNEL)
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            payload = event.encode()
            for channel in channels:
                pipe.publish(channel, payload)
        await pipe.execute()
