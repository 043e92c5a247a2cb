"""The ``spawn_subagents`` tool: hand pieces of work to subagents that run as executions of
their own, in parallel, on any worker.

The runtime only records the request: the agent parks with ``stop_reason =
"awaiting_subagents"`` and ``state.pending_subagents``; the engine starts the child executions
and, once all of them have finished, resumes the agent with their results as a user message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from app.agents.state import AgentState, Message, SubagentResult, SubagentTask
from app.agents.tools import Tool, ToolContext, ToolError, ToolSpec

MAX_TASKS = 10
STARTED = "Started {count} subagent(s); their results follow as a user message when all finish."
_TRUNCATED = "\n[... truncated ...]"


class SubagentTaskArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subagent: str = Field(description="The name of the subagent to run.")
    prompt: str = Field(min_length=1, max_length=100_000, description="Its task.")


class SpawnSubagentsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[SubagentTaskArgs] = Field(min_length=1, max_length=MAX_TASKS)


class SpawnSubagents(Tool):
    name = "spawn_subagents"
    description = (
        "Run subagents in parallel, one per task, each with its own prompt. Your work pauses "
        "until all of them finish; their results then arrive as the next user message."
    )
    Args = SpawnSubagentsArgs

    def __init__(self, available: Mapping[str, str], *, depth: int, max_depth: int) -> None:
        """``available`` maps subagent names to their descriptions; ``depth`` is this agent's
        depth (0 for an execution started over the API)."""
        self.available = dict(available)
        self.depth = depth
        self.max_depth = max_depth

    def spec(self) -> ToolSpec:
        """The model is told which subagents this agent type may use."""
        listing = "; ".join(f"{name}: {text}" for name, text in self.available.items())
        base = super().spec()
        return replace(base, description=f"{base.description} Subagents: {listing or 'none'}.")

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, SpawnSubagentsArgs)  # invoke() validated against Args
        if self.depth + 1 > self.max_depth:
            raise ToolError(
                f"subagents may nest at most {self.max_depth} levels deep and this agent is at "
                f"depth {self.depth}; do the work yourself"
            )
        unknown = sorted({t.subagent for t in args.tasks} - self.available.keys())
        if unknown:
            raise ToolError(
                f"unknown subagent(s) {', '.join(unknown)}; available: "
                f"{', '.join(sorted(self.available)) or 'none'}"
            )
        context.subagent_tasks.extend(
            SubagentTask(subagent=t.subagent, prompt=t.prompt) for t in args.tasks
        )
        return STARTED.format(count=len(args.tasks))


def refuse_subagents(state: AgentState, reason: str) -> None:
    """Take back the subagents the last step asked for: each of its ``spawn_subagents`` results
    becomes ``error: <reason>`` and the run goes on (for the engine, when a limit forbids
    them)."""
    asked = next((m for m in reversed(state.messages) if m.role == "assistant"), None)
    calls = {c.id for c in asked.tool_calls if c.name == SpawnSubagents.name} if asked else set()
    for index, message in enumerate(state.messages):
        if message.role == "tool" and message.tool_call_id in calls:
            state.messages[index] = message.model_copy(update={"content": f"error: {reason}"})
    state.pending_subagents = []
    if state.stop_reason == "awaiting_subagents":
        state.stop_reason = None


def results_message(
    results: list[SubagentResult], max_chars: int, limits: Mapping[str, int] | None = None
) -> Message:
    """The user message that hands subagents' results to their parent, each cut to its
    subagent's limit in ``limits``, else to ``max_chars``."""
    parts = [f"Results of the {len(results)} subagent(s):"]
    for number, result in enumerate(results, start=1):
        body = result.text
        limit = (limits or {}).get(result.subagent, max_chars)
        if len(body) > limit:
            body = body[:limit] + _TRUNCATED
        parts.append(f"## {number}. {result.subagent} ({result.status})\n{body}")
    return Message(role="user", content="\n\n".join(parts))
