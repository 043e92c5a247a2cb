"""The tool abstraction: a named, schema-described async function the model can call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError


class ToolError(Exception):
    """A failure the model should read and can react to (bad path, missing file, ...)."""


@dataclass(frozen=True)
class ToolSpec:
    """What a provider is told about a tool: its name, purpose and JSON schema of arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class Tool(ABC):
    """A tool the agent can run; subclasses set ``name``, ``description`` and ``Args``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[BaseModel]]

    def spec(self) -> ToolSpec:
        return _spec_of(type(self))

    @abstractmethod
    async def run(self, args: BaseModel) -> str:
        """Run with arguments already validated into an instance of ``Args``."""

    async def invoke(self, arguments: dict[str, Any]) -> str:
        """Validate ``arguments`` and run; failures come back as ``"error: ..."`` for the model.

        Only expected failures (invalid arguments, :class:`ToolError`) are turned into text;
        anything else is a bug and propagates.
        """
        try:
            args = self.Args.model_validate(arguments)
        except ValidationError as exc:
            return f"error: invalid arguments for {self.name}: {describe_validation_error(exc)}"
        try:
            return await self.run(args)
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
