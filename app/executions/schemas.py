from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from app.agents.event_tools import EVENT_TYPE_PATTERN, EventKey
from app.executions.transitions import Status
from app.outbound.schemas import SubscriptionCreated, WebhookTarget


class ExecutionInput(BaseModel):
    """What the agent is asked to do; extra members are kept and passed along."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, max_length=200_000)


MAX_INPUT_BYTES = 1_000_000
MAX_METADATA_BYTES = 64_000


def storable_size(value: Any, what: str) -> int:
    """Bytes of ``value`` as stored JSON; refuses what PostgreSQL's jsonb cannot hold."""
    try:
        return len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except ValueError as exc:  # NaN/Infinity, or a lone surrogate that is not UTF-8
        raise ValueError(f"{what} must be plain JSON: {exc}") from None


class AwaitEvent(BaseModel):
    """Start waiting for an event: the first step runs when it arrives, with its payload."""

    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(pattern=EVENT_TYPE_PATTERN, examples=["ci.finished"])
    key: EventKey | None = None
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="At most the agent type's max_event_wait (the default)."
    )


class StartExecution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_type: str = Field(min_length=1, max_length=100, examples=["demo"])
    input: ExecutionInput
    metadata: dict[str, Any] = Field(default_factory=dict)
    await_event: AwaitEvent | None = None
    run_at: AwareDatetime | None = Field(
        default=None,
        description="Start then (RFC 3339 with an offset) instead of now; in the past: now.",
    )
    delay_seconds: float | None = Field(
        default=None, gt=0, description="Start this many seconds from now instead of now."
    )
    webhook: WebhookTarget | None = Field(
        default=None, description="Be told by signed webhook when this execution reaches these."
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Run on this queue, if your tier may use it (else 422); default: routing.",
    )
    estimated_steps: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Many steps send it to the long queue."
    )

    @model_validator(mode="after")
    def _one_way_to_start(self) -> StartExecution:
        ways = [self.await_event, self.run_at, self.delay_seconds]
        if sum(way is not None for way in ways) > 1:
            raise ValueError("give at most one of await_event, run_at and delay_seconds")
        return self

    @model_validator(mode="after")
    def _fits_storage(self) -> StartExecution:
        if storable_size(self.input.model_dump(), "input") > MAX_INPUT_BYTES:
            raise ValueError(f"input is larger than {MAX_INPUT_BYTES} bytes as JSON")
        if storable_size(self.metadata, "metadata") > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes as JSON")
        return self


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class LogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    level: str
    event_type: str
    message: str
    context: dict[str, Any]
    created_at: datetime


class ConversationToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    invalid_arguments: str | None = None


class ConversationMessage(BaseModel):
    """One turn of an execution's conversation with its model."""

    seq: int = Field(description="Its position; pass the last one as `after_seq` for more.")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ConversationToolCall] = Field(default_factory=list)
    tool_call_id: str | None = Field(default=None, description="The call a tool turn answers.")
    name: str | None = Field(default=None, description="The tool a tool turn comes from.")
    created_at: datetime


class ExecutionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    agent_type: str
    status: Status
    queue: str
    queue_reason: str | None = Field(
        default=None,
        description="The routing rule that chose the queue: requested, tier, agent_type, "
        "estimated_steps or default (none for subagents).",
    )
    parent_id: uuid.UUID | None
    depth: int
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    step_count: int
    token_usage: int
    usage: Usage
    descendant_tokens: int = Field(
        default=0,
        description="On an execution started over the API: the tokens of every subagent below "
        "it, all levels. Its own and these together count against its max_tokens.",
    )
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    wait: dict[str, Any] | None = Field(
        default=None,
        description="What a parked execution waits for: an event (type, key, deadline) or its "
        "subagents.",
    )
    run_at: datetime | None = Field(default=None, description="When a scheduled start is due.")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    paused_at: datetime | None
    completed_at: datetime | None


class ChildSummary(BaseModel):
    """A subagent execution started by this one."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    agent_type: str
    status: Status
    step_count: int
    token_usage: int
    created_at: datetime
    completed_at: datetime | None


class StartedExecution(ExecutionOut):
    webhook: SubscriptionCreated | None = Field(
        default=None, description="The subscription the start's ``webhook`` made, with its secret."
    )


class ExecutionDetail(ExecutionOut):
    logs: list[LogEntry] = Field(description="The latest logs, oldest first.")
    children: list[ChildSummary] = Field(description="Subagent executions it started.")


class ExecutionPage(BaseModel):
    items: list[ExecutionOut]
    total: int
    page: int
    per_page: int


class ControlResponse(BaseModel):
    """What a control request did."""

    status: Status = Field(description="The execution's status after the request.")
    signal: str
    accepted: bool


MAX_ANSWER_BYTES = 256_000


class AnswerInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    answer: str = Field(min_length=1, max_length=200_000)

    @model_validator(mode="after")
    def _fits_storage(self) -> AnswerInput:
        if storable_size(self.model_dump(), "input") > MAX_ANSWER_BYTES:
            raise ValueError(f"input is larger than {MAX_ANSWER_BYTES} bytes as JSON")
        return self


class SendInput(BaseModel):
    """The answer to the question an execution awaiting input asked."""

    model_config = ConfigDict(extra="forbid")

    input: AnswerInput


class AgentTypeOut(BaseModel):
    """An agent type a user may start, as the dashboard's picker shows it."""

    name: str
    description: str
    provider: str
    model: str
    capabilities: list[str]
    tools: list[str] = Field(description="the tools its model is offered")
    subagents: list[str]
    queue: str
    max_steps: int
    max_tokens: int
    timeout_seconds: float
    available: bool = Field(description="false when it cannot run here (see `unavailable`)")
    unavailable: str | None = Field(default=None, description="why it cannot run")


class AgentTypeList(BaseModel):
    items: list[AgentTypeOut]
