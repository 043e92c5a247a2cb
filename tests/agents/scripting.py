"""Helpers for tests that drive an agent with a script and look at what the model was sent."""

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from app.agents.agent import Agent, StepRecord
from app.agents.drivers.base import ModelResponse
from app.agents.drivers.scripted import ScriptedDriver
from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.agents.state import AgentState, Message
from app.agents.tools import Tool, ToolContext, ToolSpec


class SleepArgs(BaseModel):
    seconds: float


class Sleep(Tool):
    """A tool that takes its time."""

    name = "sleep"
    description = "Sleep."
    Args = SleepArgs

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, SleepArgs)
        await asyncio.sleep(args.seconds)
        return "slept"


class RecordingDriver:
    """A scripted driver that also keeps a copy of every conversation it was sent."""

    def __init__(self, script: Sequence[ScriptedTurn]) -> None:
        self.scripted = ScriptedDriver(script)
        self.requests: list[list[Message]] = []

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        self.requests.append([message.model_copy(deep=True) for message in messages])
        return await self.scripted.complete(messages, tools)


def call(name: str, **arguments: Any) -> ScriptedToolCall:
    return ScriptedToolCall(name=name, arguments=arguments)


def turn(*calls: ScriptedToolCall, content: str | None = None, **fields: Any) -> ScriptedTurn:
    return ScriptedTurn(content=content, tool_calls=list(calls), **fields)


def recording_agent(
    script: list[ScriptedTurn], tools: Sequence[Tool], **limits: Any
) -> tuple[Agent, RecordingDriver]:
    spec = AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        system_prompt="system prompt",
        script=script,
        **limits,
    )
    driver = RecordingDriver(script)
    return Agent(spec, driver, tools), driver


async def run(agent: Agent, state: AgentState) -> list[StepRecord]:
    return [record async for record in agent.iterate(state)]
