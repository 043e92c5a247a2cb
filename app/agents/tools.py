"""The tool abstraction: a named, schema-described async function the model can call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from app.agents.state import EventWait, SubagentTask, Task


class ToolError(Exception):
    """A failure the model should read and can react to (bad path, missing file, ...)."""


@dataclass(frozen=True)
class ToolSpec:
    """What a provider is told about a tool: its name, purpose and JSON schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ToolContext:
    """The part of the agent's state that the tool calls of one step may read and change.

    Tools never touch :class:`~app.agents.state.AgentState` itself: the agent fills a fresh
    context before a step's tool calls and applies it back only once the whole step completes,
    so a step cut short (timeout, cancellation) leaves the state exactly as it was.
    """

    tasks: list[Task] = field(default_factory=list)
    """The plan; ``task_plan`` replaces it."""
    questions: list[str] = field(default_factory=list)
    """Questions for the user (``ask_user``); any parks the agent after the step."""
    subagent_tasks: list[SubagentTask] = field(default_factory=list)
    """Work for subagents (``spawn_subagents``); any parks the agent until they finish."""
    event_wait: EventWait | None = None
    """The event to wait for (``wait_for_event``); parks the agent until it arrives."""


class Tool(ABC):
    """A tool the agent can run; subclasses set ``name``, ``description`` and ``Args``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]

    def spec(self) -> ToolSpec:
        return _spec_of(type(self))

    @abstractmethod
    async def run(self, args: BaseModel, context: ToolContext) -> str:
        """Run with arguments already validated into an instance of ``Args``."""

    async def invoke(self, arguments: dict[str, Any], context: ToolContext | None = None) -> str:
        """Validate ``arguments`` and run; failures come back as ``"error: ..."`` for the model.

        Only expected failures (invalid arguments, :class:`ToolError`) are turned into text;
        anything else is a bug and propagates. Without ``context`` the tool gets a fresh,
        throwaway one (for tools used outside an agent).
        """
        try:
            args = self.Args.model_validate(arguments)
        except ValidationError as exc:
            return f"error: invalid arguments for {self.name}: {describe_validation_error(exc)}"
        try:
            return await self.run(args, context if context is not None else ToolContext())
        except ToolError as exc:
            return f"error: {exc}"


@cache
def _spec_of(tool: type[Tool]) -> ToolSpec:
    # Building a JSON schema takes milliseconds; every agent built for a job asks for it.
    return ToolSpec(
        name=tool.name, description=tool.description, parameters=tool.Args.model_json_schema()
    )


def describe_validation_error(exc: ValidationError) -> str:
    """A compact one-line account of a validation error, e.g. ``path: Field required``."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"])
        parts.append(f"{location}: {error['msg']}" if location else error["msg"])
    return "; ".join(parts)
