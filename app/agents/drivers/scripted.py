"""A deterministic driver that plays a fixed script: demos, tests and benchmarks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

from app.agents.drivers.base import ModelResponse
from app.agents.errors import ScriptExhausted
from app.agents.spec import ScriptedTurn
from app.agents.state import Message, ToolCall, Usage
from app.agents.tools import ToolSpec


class ScriptedDriver:
    """Plays ``script[i]`` where ``i`` is the number of assistant messages so far.

    The driver keeps no state of its own, so a conversation restored from a checkpoint (in
    any process) continues exactly where it stopped.
    """

    def __init__(self, script: Sequence[ScriptedTurn]) -> None:
        self.script = list(script)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        turn_index = sum(1 for message in messages if message.role == "assistant")
        if turn_index >= len(self.script):
            raise ScriptExhausted(
                f"the script has {len(self.script)} turns and turn {turn_index + 1} was requested"
            )
        turn = self.script[turn_index]
        if turn.delay_seconds:
            await asyncio.sleep(turn.delay_seconds)
        substitutions = {
            "{prompt}": _first_content(messages, "user"),
            "{last_tool_result}": _first_content(reversed(messages), "tool"),
            "{last_user_message}": _first_content(reversed(messages), "user"),
        }
        message = Message(
            role="assistant",
            content=None if turn.content is None else _substitute(turn.content, substitutions),
            tool_calls=[
                ToolCall(
                    id=f"call_{turn_index}_{i}",
                    name=call.name,
                    arguments=_substitute_json(call.arguments, substitutions),
                )
                for i, call in enumerate(turn.tool_calls)
            ],
        )
        usage = Usage(input_tokens=turn.input_tokens, output_tokens=turn.output_tokens)
        return ModelResponse(message=message, usage=usage)


def _first_content(messages: Iterable[Message], role: str) -> str:
    return next((m.content or "" for m in messages if m.role == role), "")


_PLACEHOLDER = re.compile(r"\{prompt\}|\{last_tool_result\}|\{last_user_message\}")


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    # Only the placeholders are touched (unlike str.format, other braces in the script
    # stay intact), in one pass so a prompt containing "{last_tool_result}" stays literal.
    return _PLACEHOLDER.sub(lambda match: substitutions[match.group()], text)


def _substitute_json(value: Any, substitutions: dict[str, str]) -> Any:
    """``value`` with placeholders replaced in every string, however deeply nested."""
    if isinstance(value, str):
        return _substitute(value, substitutions)
    if isinstance(value, dict):
        return {key: _substitute_json(item, substitutions) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute_json(item, substitutions) for item in value]
    return value
