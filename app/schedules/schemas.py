from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from app.executions.schemas import MAX_METADATA_BYTES, ExecutionInput, storable_size
from app.schedules.clock import Cron, TimeZone

_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,99}$"


class _ScheduleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _small_metadata(self) -> _ScheduleFields:
        metadata = getattr(self, "metadata", None)
        if metadata and storable_size(metadata, "metadata") > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
        return self


class ScheduleCreate(_ScheduleFields):
    name: str = Field(pattern=_NAME, examples=["nightly audit"])
    cron: Cron = Field(max_length=100, examples=["0 9 * * 1"], description="Five fields.")
    timezone: TimeZone = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    agent_type: str = Field(min_length=1, max_length=100)
    input: ExecutionInput
    metadata: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class ScheduleUpdate(_ScheduleFields):
    """The fields to change; the others keep their values."""

    cron: Cron | None = Field(default=None, max_length=100)
    timezone: TimeZone | None = Field(default=None, max_length=64)
    agent_type: str | None = Field(default=None, min_length=1, max_length=100)
    input: ExecutionInput | None = None
    metadata: dict[str, Any] | None = None
    enabled: bool | None = None


class ScheduleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    cron: str
    timezone: str
    agent_type: str
    input: dict[str, Any]
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    enabled: bool
    from_config: bool = Field(description="Defined in the service's configuration file.")
    next_run_at: datetime | None
    last_fired_at: datetime | None
    last_execution_id: uuid.UUID | None
    last_skip: dict[str, Any] | None = Field(
        description="The last fire that started nothing, and why (e.g. the tier's limit)."
    )
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    total: int
    page: int
    per_page: int
