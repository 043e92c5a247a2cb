from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.agents.event_tools import EVENT_TYPE_PATTERN, EventKey
from app.executions.schemas import storable_size

MAX_PAYLOAD_BYTES = 256_000


class EventIn(BaseModel):
    """An event from outside, for the executions waiting for it."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(pattern=EVENT_TYPE_PATTERN, examples=["ci.finished"])
    key: EventKey | None = None
    payload: Any = Field(default=None, description="Any JSON; the waiting agents see it.")

    @model_validator(mode="after")
    def _fits_storage(self) -> EventIn:
        if storable_size(self.payload, "payload") > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes as JSON")
        return self


class DeliverEvent(EventIn):
    user_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="Admins only: deliver for this user."
    )


class EventDelivery(BaseModel):
    """What an event did."""

    triggered_count: int = Field(description="How many waiting executions it woke.")
    execution_ids: list[uuid.UUID]
    kept_event_id: int | None = Field(
        description="When nobody waited: the id it is kept under (see events.buffer_seconds)."
    )
