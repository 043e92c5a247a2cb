"""What every model driver provides: one completion for a conversation and a tool set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.agents.state import Message, Usage
from app.agents.tools import ToolSpec


@dataclass(frozen=True)
class Retry:
    """A failed attempt of a model call that was tried again."""

    attempt: int
    attempts: int
    failure: str
    status_code: int | None
    wait_seconds: float


@dataclass(frozen=True)
class ModelResponse:
    """The model's next assistant message, the tokens the call used and the attempts that
    failed before it."""

    message: Message
    usage: Usage
    retries: tuple[Retry, ...] = ()


class Driver(Protocol):
    """A model provider.

    ``messages`` starts with the system prompt (role ``system``) when there is one; drivers
    translate it to their provider's format. Failures raise
    :class:`~app.agents.errors.ProviderError`.
    """

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse: ...
