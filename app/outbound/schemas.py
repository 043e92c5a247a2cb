from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.outbound.guard import MAX_URL_CHARS, RefusedURL, check_url_form

StatusEvent = Literal[
    "completed", "failed", "cancelled", "awaiting_input", "awaiting_event", "paused"
]


def _endings() -> list[StatusEvent]:
    return ["completed", "failed", "cancelled"]


class WebhookTarget(BaseModel):
    """Where to tell about an execution's status changes, and which of them."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_CHARS, examples=["https://example.com/hooks/agents"])
    events: list[StatusEvent] = Field(default_factory=_endings, min_length=1, max_length=6)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            return check_url_form(value)
        except RefusedURL as exc:
            raise ValueError(str(exc)) from None


class SubscriptionCreate(WebhookTarget):
    description: str = Field(default="", max_length=200)


class SubscriptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    events: list[str]
    description: str
    execution_id: uuid.UUID | None = Field(
        description="Set for a subscription made by the start of one execution."
    )
    created_at: datetime


class SubscriptionCreated(SubscriptionOut):
    secret: str = Field(
        description="The whsec_ secret that signs every delivery; shown only this once."
    )


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    status_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="The first 1 KB of the response body.")
    next_attempt_at: datetime | None
    attempted_at: datetime


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str = Field(description="The webhook-id header, the same at every attempt.")
    execution_id: uuid.UUID
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    total: int
    page: int
    per_page: int
