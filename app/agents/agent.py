"""The agent loop: ask the model, run the tools it asks for, repeat until done or a limit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.agents.drivers.base import Driver, ModelResponse, Retry
from app.agents.event_tools import describe_outcome
from app.agents.spec import AgentTypeSpec
from app.agents.state import (
    AgentState,
    EventOutcome,
    Message,
    StopReason,
    SubagentResult,
    ToolCall,
    Usage,
)
from app.agents.subagents import results_message
from app.agents.task_tools import render_plan
from app.agents.tools import Tool, ToolContext

# How much of a model's unparsable tool arguments is quoted back to it.
_QUOTE_CHARS = 200
# How much of a tool call's arguments and result its log rows keep.
PREVIEW_CHARS = 500
# The share of max_steps / max_tokens at which a step logs a warning.
LIMIT_WARNING_SHARE = 0.8


@dataclass(frozen=True)
class LogEntry:
    """A log row a step asks for besides its own: a tool call, a warning."""

    level: Literal["info", "warning"]
    event_type: Literal["tool_called", "tool_completed", "warning"]
    message: str
    context: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "event_type": self.event_type,
            "message": self.message,
            "context": self.context,
        }


@dataclass(frozen=True)
class StepRecord:
    """What one step did.

    ``state`` is the live state object, already advanced past this step; it keeps changing as
    iteration goes on, so snapshot it at the yield if a frozen copy is needed. ``logs`` are
    the step's tool calls and warnings, in the order they happened.
    """

    number: int
    kind: Literal["tool_calls", "final"]
    tool_names: list[str]
    tokens_used: int
    new_messages: list[Message]
    state: AgentState
    logs: list[LogEntry] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)  # this step's model call
    model_seconds: float = 0.0  # how long the model call took


class Agent:
    """Runs one agent type: its model driver, its tools and its limits."""

    def __init__(self, spec: AgentTypeSpec, driver: Driver, tools: Sequence[Tool]) -> None:
        self.spec = spec
        self.driver = driver
        self.tools = {tool.name: tool for tool in tools}
        if len(self.tools) != len(tools):
            raise ValueError(f"duplicate tool names in {[tool.name for tool in tools]}")
        self._tool_specs = [tool.spec() for tool in tools]

    def initial_state(self, prompt: str, metadata: dict[str, Any] | None = None) -> AgentState:
        return AgentState(
            messages=[
                Message(role="system", content=self.spec.system_prompt),
                Message(role="user", content=prompt),
            ],
            metadata=dict(metadata or {}),
        )

    async def iterate(self, state: AgentState) -> AsyncGenerator[StepRecord, None]:
        """Advance ``state`` in place one step at a time, yielding after each step.

        When the run ends (final answer or a limit) ``state.stop_reason`` is set; the final
        answer's step is yielded, a limit stops without yielding. A step in which the model
        called ``ask_user`` parks the run: it is yielded with ``state.pending_question`` set
        and ``stop_reason`` ``"awaiting_input"``, and iteration ends; :meth:`answer` makes the
        state ready to continue. A state that already has a stop reason is not advanced.

        Every yield leaves the state consistent, so the caller may stop consuming at any yield,
        checkpoint, and later continue by calling ``iterate`` again with the restored state;
        nothing is held open across a yield, so an abandoned generator needs no cleanup
        (``aclose`` is still tidy). The plan (``state.tasks``) is shown to the model appended
        to the system prompt of each request, never stored in ``state.messages``.
        Driver errors propagate.
        """
        while state.stop_reason is None:
            reason = self._limit_reached(state)
            if reason is not None:
                state.stop_reason = reason
                return
            record = await self._step(state)
            if record is None:
                return
            yield record

    def answer(self, state: AgentState, answer: str) -> Message:
        """Answer the pending question: the appended user message, for the caller to persist.

        Clears ``pending_question`` and ``stop_reason`` so that ``iterate`` continues the run.
        Raises ValueError when ``state`` is not awaiting input.
        """
        if state.stop_reason != "awaiting_input":
            raise ValueError(f"the agent is not awaiting input (stop reason {state.stop_reason})")
        message = Message(role="user", content=answer)
        state.messages.append(message)
        state.pending_question = None
        state.stop_reason = None
        return message

    def receive_subagent_results(
        self,
        state: AgentState,
        results: list[SubagentResult],
        limits: Mapping[str, int] | None = None,
    ) -> Message:
        """Hand the results of the subagents the agent waits for to it, as a user message (each
        cut to its subagent's limit in ``limits``, else to the type's ``summary_max_chars``);
        returns the message, for the caller to persist.

        Clears ``pending_subagents`` and ``stop_reason`` so that ``iterate`` continues the run.
        Raises ValueError when ``state`` is not waiting for subagents.
        """
        if state.stop_reason != "awaiting_subagents":
            raise ValueError(f"the agent is not waiting for subagents ({state.stop_reason})")
        message = results_message(results, self.spec.summary_max_chars, limits)
        state.messages.append(message)
        state.pending_subagents = []
        state.stop_reason = None
        return message

    def receive_event(self, state: AgentState, outcome: EventOutcome) -> Message:
        """End the wait for an event: the outcome becomes the result of the ``wait_for_event``
        call (or, for an agent that has not run yet because its execution started waiting,
        joins its prompt). Returns the message, for the caller to persist.

        Raises ValueError when ``state`` waits for no event and has already run.
        """
        wait = state.pending_event
        if state.stop_reason == "awaiting_event" and wait is not None:
            message = Message(
                role="tool",
                content=describe_outcome(outcome, wait.timeout_seconds),
                tool_call_id=wait.tool_call_id,
                name="wait_for_event",
            )
            state.messages.append(message)
            state.pending_event = None
            state.stop_reason = None
            return message
        if state.step_count == 0 and state.stop_reason is None and state.messages:
            prompt = state.messages[-1]
            content = f"{prompt.content or ''}\n\n{describe_outcome(outcome)}".strip()
            state.messages[-1] = prompt.model_copy(update={"content": content})
            return state.messages[-1]
        raise ValueError(f"the agent is not waiting for an event ({state.stop_reason})")

    def _limit_reached(self, state: AgentState) -> StopReason | None:
        if state.step_count >= self.spec.max_steps:
            return "max_steps"
        if state.usage.total_tokens >= self.spec.max_tokens:
            return "max_tokens"
        if state.elapsed_seconds >= self.spec.timeout:
            return "timeout"
        return None

    async def _step(self, state: AgentState) -> StepRecord | None:
        """One model call and its tool calls, applied to ``state``; None when time ran out."""
        started = time.monotonic()
        response: ModelResponse | None = None
        context = ToolContext(tasks=list(state.tasks))
        logs: list[LogEntry] = []
        try:
            async with asyncio.timeout(self.spec.timeout - state.elapsed_seconds) as limit:
                response = await self.driver.complete(self._conversation(state), self._tool_specs)
                model_seconds = time.monotonic() - started
                logs.extend(_retry_warning(retry) for retry in response.retries)
                results = await self._run_tools(response.message.tool_calls, context, logs)
        except TimeoutError:
            if not limit.expired():
                raise  # a TimeoutError of the driver or a tool, not the step's deadline
            # A step cut short leaves no messages (the conversation must stay well-formed),
            # but the tokens of a model call that did finish were spent all the same.
            state.elapsed_seconds += time.monotonic() - started
            if response is not None:
                state.usage = state.usage.add(response.usage)
            state.stop_reason = "timeout"
            return None
        message = response.message
        new_messages = [message, *results]
        state.messages.extend(new_messages)
        tokens_before = state.usage.total_tokens
        state.usage = state.usage.add(response.usage)
        state.step_count += 1
        logs.extend(self._limit_warnings(state, tokens_before))
        state.elapsed_seconds += time.monotonic() - started
        state.tasks = context.tasks
        if not message.tool_calls:
            state.final_answer = message.content or ""
            state.stop_reason = "final_answer"
        elif context.questions:
            state.pending_question = "\n\n".join(context.questions)
            state.stop_reason = "awaiting_input"
        elif context.subagent_tasks:
            state.pending_subagents = context.subagent_tasks
            state.stop_reason = "awaiting_subagents"
        elif context.event_wait:
            state.pending_event = context.event_wait
            state.stop_reason = "awaiting_event"
        return StepRecord(
            number=state.step_count,
            kind="tool_calls" if message.tool_calls else "final",
            tool_names=[call.name for call in message.tool_calls],
            tokens_used=response.usage.total_tokens,
            new_messages=new_messages,
            state=state,
            logs=logs,
            usage=response.usage,
            model_seconds=model_seconds,
        )

    def _limit_warnings(self, state: AgentState, tokens_before: int) -> list[LogEntry]:
        """A warning for each limit this step brought to 80% of its maximum."""
        warnings = []
        crossings = (
            ("max_steps", state.step_count - 1, state.step_count, self.spec.max_steps),
            ("max_tokens", tokens_before, state.usage.total_tokens, self.spec.max_tokens),
        )
        for limit, before, now, maximum in crossings:
            threshold = maximum * LIMIT_WARNING_SHARE
            if before < threshold <= now < maximum:
                warnings.append(
                    LogEntry(
                        "warning",
                        "warning",
                        f"{limit} nearly reached: {now} of {maximum}",
                        {"kind": "limit", "limit": limit, "used": now, "maximum": maximum},
                    )
                )
        return warnings

    def _conversation(self, state: AgentState) -> list[Message]:
        """The messages sent to the model: the state's, the current plan (if any) appended
        to the system prompt.

        The plan is not stored in ``state.messages``: it changes, and messages are stored
        append-only.
        """
        if not state.tasks:
            return state.messages
        plan = render_plan(state.tasks)
        messages = list(state.messages)
        if messages and messages[0].role == "system":
            prompt = messages[0].content
            content = f"{prompt}\n\n{plan}" if prompt else plan
            messages[0] = messages[0].model_copy(update={"content": content})
        else:
            messages.insert(0, Message(role="system", content=plan))
        return messages

    async def _run_tools(
        self, calls: list[ToolCall], context: ToolContext, logs: list[LogEntry]
    ) -> list[Message]:
        """The tool messages answering ``calls``, in order; a ``wait_for_event`` call that
        starts a wait gets none now (the event becomes its result). Each call adds its
        ``tool_called`` and ``tool_completed`` rows to ``logs``. Calls beyond the type's
        ``max_tool_calls`` are answered with an error, not run (one warning row for them)."""
        results = []
        limit = self.spec.max_tool_calls
        for call in calls[:limit]:
            waiting = context.event_wait
            logs.append(_tool_called(call))
            started = time.monotonic()
            result = await self._run_tool(call, context)
            duration = time.monotonic() - started
            if context.event_wait is not None and context.event_wait is not waiting:
                context.event_wait.tool_call_id = call.id
                logs.append(_tool_completed(call, "waiting for the event", duration))
                continue
            logs.append(_tool_completed(call, result.content or "", duration))
            results.append(result)
        for call in calls[limit:]:  # a model asking for more is answered, not obeyed
            results.append(
                Message(
                    role="tool",
                    content=f"error: at most {limit} tool calls run per turn; this one did not",
                    tool_call_id=call.id,
                    name=call.name,
                )
            )
        if len(calls) > limit:
            logs.append(_tool_limit_warning(len(calls) - limit, limit))
        wait = context.event_wait
        if wait is not None and (context.questions or context.subagent_tasks):
            context.event_wait = None
            results.append(
                Message(
                    role="tool",
                    content="error: wait_for_event cannot be combined with ask_user or "
                    "spawn_subagents in one turn; call it again on its own",
                    tool_call_id=wait.tool_call_id,
                    name="wait_for_event",
                )
            )
        return results

    async def _run_tool(self, call: ToolCall, context: ToolContext) -> Message:
        """The tool message answering ``call``; failures become an ``error: ...`` content."""
        tool = self.tools.get(call.name)
        if call.invalid_arguments is not None:
            quoted = call.invalid_arguments[:_QUOTE_CHARS]
            if len(call.invalid_arguments) > _QUOTE_CHARS:
                quoted += "..."
            result = f"error: invalid JSON arguments for {call.name}, expected an object: {quoted}"
        elif tool is None:
            available = ", ".join(self.tools) or "none"
            result = f"error: unknown tool {call.name!r} (available tools: {available})"
        else:
            result = await tool.invoke(call.arguments, context)
        return Message(role="tool", content=result, tool_call_id=call.id, name=call.name)


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


def _tool_called(call: ToolCall) -> LogEntry:
    if call.invalid_arguments is not None:
        arguments = call.invalid_arguments
    else:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
    return LogEntry(
        "info",
        "tool_called",
        f"Tool {call.name} called",
        {"tool": call.name, "tool_call_id": call.id, "arguments": _preview(arguments)},
    )


def _tool_completed(call: ToolCall, result: str, duration: float) -> LogEntry:
    # Every expected tool failure comes back to the model as "error: ...".
    failed = result.startswith("error:")
    return LogEntry(
        "warning" if failed else "info",
        "tool_completed",
        f"Tool {call.name} {'failed' if failed else 'completed'} in {duration * 1000:.0f} ms",
        {
            "tool": call.name,
            "tool_call_id": call.id,
            "outcome": "error" if failed else "ok",
            "duration_ms": round(duration * 1000, 1),
            "result": _preview(result),
        },
    )


def _tool_limit_warning(refused: int, limit: int) -> LogEntry:
    return LogEntry(
        "warning",
        "warning",
        f"{refused} tool call(s) over the limit of {limit} per step were not run",
        {"kind": "tool_call_limit", "limit": limit, "refused": refused},
    )


def _retry_warning(retry: Retry) -> LogEntry:
    return LogEntry(
        "warning",
        "warning",
        f"Model call attempt {retry.attempt} of {retry.attempts} failed ({retry.failure}); "
        f"retried after {retry.wait_seconds:g} s",
        {
            "kind": "provider_retry",
            "status": retry.status_code,
            "attempt": retry.attempt,
            "attempts": retry.attempts,
            "wait_seconds": retry.wait_seconds,
            "failure": retry.failure,
        },
    )
