"""The state of a running agent: conversation, usage and progress, lossless through JSON."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal[
    "final_answer",
    "max_steps",
    "max_tokens",
    "timeout",
    "awaiting_input",
    "awaiting_subagents",
    "awaiting_event",
]
TaskStatus = Literal["pending", "in_progress", "done"]


class ToolCall(BaseModel):
    """A tool call the model asked for.

    ``invalid_arguments`` holds the provider's raw argument text when it was not a JSON
    object; ``arguments`` is then empty and the agent answers the call with an error instead
    of running the tool.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    invalid_arguments: str | None = None


class Message(BaseModel):
    """One conversation turn, in a provider-neutral shape."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class Task(BaseModel):
    """One item of the plan the model keeps with the ``task_plan`` tool."""

    model_config = ConfigDict(extra="forbid")

    title: str
    status: TaskStatus = "pending"


class SubagentTask(BaseModel):
    """A piece of work handed to a subagent (``spawn_subagents``)."""

    model_config = ConfigDict(extra="forbid")

    subagent: str
    prompt: str


class EventWait(BaseModel):
    """An event the agent waits for (``wait_for_event``): its type, optionally a key it must
    carry, and how long to wait. ``tool_call_id`` is the call whose result the event becomes."""

    model_config = ConfigDict(extra="forbid")

    event_type: str
    key: str | None = None
    timeout_seconds: float
    tool_call_id: str | None = None


class EventOutcome(BaseModel):
    """How a wait ended: the event's payload, or ``timed_out``."""

    model_config = ConfigDict(extra="forbid")

    event_type: str
    key: str | None = None
    payload: Any = None
    timed_out: bool = False


class SubagentResult(BaseModel):
    """How one subagent's work ended: its answer, or why there is none."""

    model_config = ConfigDict(extra="forbid")

    subagent: str
    status: str
    text: str


class AgentState(BaseModel):
    """Everything an agent needs to continue from where it stopped.

    ``elapsed_seconds`` counts only time spent stepping, so a parked or queued execution does
    not use up its timeout. ``tasks`` is the model's current plan (``task_plan``);
    ``pending_question`` is the question of an agent parked with stop reason
    ``awaiting_input`` until :meth:`~app.agents.agent.Agent.answer` supplies the answer;
    ``pending_subagents`` the work of an agent parked with ``awaiting_subagents`` until the
    results of its child executions arrive as a user message; ``pending_event`` the event an
    agent parked with ``awaiting_event`` waits for.
    """

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    step_count: int = 0
    elapsed_seconds: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)
    final_answer: str | None = None
    stop_reason: StopReason | None = None
    tasks: list[Task] = Field(default_factory=list)
    pending_question: str | None = None
    pending_subagents: list[SubagentTask] = Field(default_factory=list)
    pending_event: EventWait | None = None

    def snapshot(self) -> dict[str, Any]:
        """The state without its messages: those are stored one row each, append-only."""
        return self.model_dump(mode="json", exclude={"messages"})

    @classmethod
    def restore(cls, snapshot: dict[str, Any], messages: list[dict[str, Any]]) -> AgentState:
        return cls.model_validate({**snapshot, "messages": messages})
