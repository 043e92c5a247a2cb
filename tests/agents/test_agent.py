"""The agent loop, driven by scripts, with the real file tools."""

import json
import time
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.agents.agent import Agent, StepRecord
from app.agents.demo import DEMO_AGENT
from app.agents.drivers.scripted import ScriptedDriver
from app.agents.errors import ProviderError, ScriptExhausted
from app.agents.file_tools import file_tools
from app.agents.registry import build_agent
from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.agents.state import AgentState, Message
from app.agents.tools import Tool
from app.agents.workspace import Workspace
from tests.agents.scripting import Sleep


def scripted(script: list[ScriptedTurn], **limits: Any) -> AgentTypeSpec:
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["files"],
        system_prompt="system prompt",
        script=script,
        **limits,
    )


def make_agent(spec: AgentTypeSpec, workspace: Path, extra_tools: Sequence[Tool] = ()) -> Agent:
    workspace.mkdir(exist_ok=True)
    tools = [*file_tools(Workspace(workspace)), *extra_tools]
    return Agent(spec, ScriptedDriver(spec.script), tools)


def call(name: str, **arguments: Any) -> ScriptedToolCall:
    return ScriptedToolCall(name=name, arguments=arguments)


def turn(*calls: ScriptedToolCall, content: str | None = None, **fields: Any) -> ScriptedTurn:
    return ScriptedTurn(content=content, tool_calls=list(calls), **fields)


async def run(agent: Agent, state: AgentState) -> list[StepRecord]:
    return [record async for record in agent.iterate(state)]


async def test_demo_agent_end_to_end(tmp_path: Path, http: httpx.AsyncClient) -> None:
    agent = build_agent(DEMO_AGENT, workspace=tmp_path / "ws", http=http, environ={})
    state = agent.initial_state("hello world", metadata={"execution": "e1"})

    records = await run(agent, state)

    assert state.final_answer == "The note in my workspace says: hello world"
    assert state.stop_reason == "final_answer"
    assert (tmp_path / "ws" / "note.txt").read_text() == "hello world"
    assert state.metadata == {"execution": "e1"}
    assert [r.number for r in records] == [1, 2, 3]
    assert [r.kind for r in records] == ["tool_calls", "tool_calls", "final"]
    assert [r.tool_names for r in records] == [["write_file"], ["read_file"], []]
    assert [r.tokens_used for r in records] == [15, 15, 15]
    assert all(r.state is state for r in records)
    assert state.step_count == 3
    assert (state.usage.input_tokens, state.usage.output_tokens) == (30, 15)
    assert state.elapsed_seconds > 0

    write_step = records[0].new_messages
    assert [m.role for m in write_step] == ["assistant", "tool"]
    assert write_step[0].tool_calls[0].id == "call_0_0"
    assert write_step[0].tool_calls[0].arguments == {"path": "note.txt", "content": "hello world"}
    assert write_step[1].tool_call_id == "call_0_0"
    assert write_step[1].name == "write_file"
    assert write_step[1].content == "wrote 11 bytes to note.txt"
    assert records[1].new_messages[1].content == "hello world"
    assert [m.role for m in records[2].new_messages] == ["assistant"]
    assert state.messages == [
        Message(role="system", content=DEMO_AGENT.system_prompt),
        Message(role="user", content="hello world"),
        *records[0].new_messages,
        *records[1].new_messages,
        *records[2].new_messages,
    ]


async def test_tool_calls_of_one_step_run_in_order(tmp_path: Path) -> None:
    spec = scripted(
        [
            turn(
                call("write_file", path="a.txt", content="first"),
                call("write_file", path="a.txt", content="second"),
                call("read_file", path="a.txt"),
            ),
            turn(content="done: {last_tool_result}"),
        ]
    )
    agent = make_agent(spec, tmp_path / "ws")
    state = agent.initial_state("go")

    records = await run(agent, state)

    step = records[0]
    assert step.tool_names == ["write_file", "write_file", "read_file"]
    assert [m.tool_call_id for m in step.new_messages[1:]] == ["call_0_0", "call_0_1", "call_0_2"]
    assert step.new_messages[3].content == "second"
    assert state.final_answer == "done: second"


async def test_final_answer_without_content_is_empty(tmp_path: Path) -> None:
    agent = make_agent(scripted([turn()]), tmp_path / "ws")
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert [r.kind for r in records] == ["final"]
    assert state.final_answer == ""


async def test_stops_at_max_steps(tmp_path: Path) -> None:
    agent = make_agent(scripted([turn(call("list_files"))] * 5, max_steps=2), tmp_path / "ws")
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert len(records) == 2
    assert state.stop_reason == "max_steps"
    assert state.step_count == 2
    assert state.final_answer is None


async def test_stops_at_max_tokens(tmp_path: Path) -> None:
    expensive = turn(call("list_files"), input_tokens=90, output_tokens=10)
    agent = make_agent(scripted([expensive] * 5, max_tokens=250), tmp_path / "ws")
    state = agent.initial_state("go")

    records = await run(agent, state)

    # 0, 100 and 200 tokens are under the limit before steps 1-3; 300 is not.
    assert len(records) == 3
    assert state.stop_reason == "max_tokens"
    assert state.usage.total_tokens == 300


async def test_timeout_interrupts_a_slow_model_call(tmp_path: Path) -> None:
    agent = make_agent(scripted([turn(content="late", delay_seconds=5)], timeout=0.05), tmp_path)
    state = agent.initial_state("go")

    started = time.monotonic()
    records = await run(agent, state)

    assert time.monotonic() - started < 1
    assert records == []
    assert state.stop_reason == "timeout"
    assert state.step_count == 0
    assert state.final_answer is None
    assert len(state.messages) == 2
    assert 0.04 < state.elapsed_seconds < 1


async def test_timeout_counts_time_already_spent(tmp_path: Path) -> None:
    agent = make_agent(scripted([turn(content="late", delay_seconds=5)], timeout=10), tmp_path)
    state = agent.initial_state("go")
    state.elapsed_seconds = 9.95  # as restored from a checkpoint

    started = time.monotonic()
    await run(agent, state)

    assert time.monotonic() - started < 1
    assert state.stop_reason == "timeout"


async def test_no_step_starts_after_the_timeout(tmp_path: Path) -> None:
    # An empty script: a model call would raise ScriptExhausted.
    agent = make_agent(scripted([], timeout=10), tmp_path)
    state = agent.initial_state("go")
    state.elapsed_seconds = 10.0

    assert await run(agent, state) == []
    assert state.stop_reason == "timeout"


async def test_timeout_bounds_tools_too(tmp_path: Path) -> None:
    spec = scripted(
        [
            turn(call("sleep", seconds=0), input_tokens=1, output_tokens=1),
            turn(call("sleep", seconds=5), input_tokens=3, output_tokens=4),
            turn(content="never"),
        ],
        timeout=0.3,
    )
    agent = make_agent(spec, tmp_path, [Sleep()])
    state = agent.initial_state("go")

    started = time.monotonic()
    records = await run(agent, state)

    assert time.monotonic() - started < 1.5
    assert len(records) == 1
    assert state.stop_reason == "timeout"
    assert state.step_count == 1
    # The cut step leaves no messages, but its model call's tokens were spent.
    assert len(state.messages) == 4
    assert state.usage.total_tokens == 9


async def test_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    spec = scripted(
        [
            turn(call("write_file", path="a.txt", content="{prompt}"), content="writing"),
            turn(call("write_file", path="dir/b.txt", content="[{last_tool_result}]")),
            turn(call("list_files")),
            turn(call("read_file", path="dir/b.txt"), input_tokens=7, output_tokens=3),
            turn(call("write_file", path="c.txt", content="{last_tool_result} + {prompt}")),
            turn(content="final: {last_tool_result}"),
        ]
    )
    uninterrupted = make_agent(spec, tmp_path / "one")
    expected = uninterrupted.initial_state("the prompt", metadata={"k": [1, 2.5]})
    await run(uninterrupted, expected)

    first = make_agent(spec, tmp_path / "two")
    state = first.initial_state("the prompt", metadata={"k": [1, 2.5]})
    async with aclosing(first.iterate(state)) as steps:
        async for record in steps:
            if record.number == 3:
                break
    snapshot = json.loads(json.dumps(state.snapshot()))
    rows = json.loads(json.dumps([m.model_dump(mode="json") for m in state.messages]))
    # A fresh agent and driver, as in another worker process.
    second = make_agent(spec, tmp_path / "two")
    restored = AgentState.restore(snapshot, rows)
    resumed_records = await run(second, restored)

    assert [r.number for r in resumed_records] == [4, 5, 6]
    assert restored.final_answer == "final: wrote 38 bytes to c.txt"
    for field in ("messages", "usage", "step_count", "metadata", "final_answer", "stop_reason"):
        assert getattr(restored, field) == getattr(expected, field), field
    for name in ("a.txt", "dir/b.txt", "c.txt"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()


async def test_finished_state_is_not_advanced(tmp_path: Path) -> None:
    agent = make_agent(scripted([]), tmp_path)  # any model call would raise ScriptExhausted
    state = agent.initial_state("go")
    state.stop_reason = "final_answer"

    assert await run(agent, state) == []
    assert state.step_count == 0


async def test_mistakes_are_returned_to_the_model(tmp_path: Path) -> None:
    spec = scripted(
        [
            turn(
                call("delete_everything", path="/"),
                call("read_file", line=3),
                call("write_file", path="x.txt", content=42),
                call("read_file", path="../../etc/passwd"),
            ),
            turn(content="I saw: {last_tool_result}"),
        ]
    )
    agent = make_agent(spec, tmp_path / "ws")
    state = agent.initial_state("go")

    records = await run(agent, state)

    results = [m.content for m in records[0].new_messages[1:]]
    assert results == [
        "error: unknown tool 'delete_everything' "
        "(available tools: read_file, write_file, edit_file, list_files, search_files)",
        "error: invalid arguments for read_file: path: Field required; "
        "line: Extra inputs are not permitted",
        "error: invalid arguments for write_file: content: Input should be a valid string",
        "error: invalid path '../../etc/passwd': '..' is not allowed",
    ]
    assert state.stop_reason == "final_answer"
    assert (
        state.final_answer == "I saw: error: invalid path '../../etc/passwd': '..' is not allowed"
    )


async def test_running_past_the_script_raises(tmp_path: Path) -> None:
    agent = make_agent(scripted([turn(call("list_files"))]), tmp_path)
    state = agent.initial_state("go")

    with pytest.raises(ScriptExhausted, match="the script has 1 turns and turn 2 was requested"):
        await run(agent, state)

    assert state.step_count == 1
    assert state.stop_reason is None
    assert ScriptExhausted.error_type == "script_exhausted"
    assert issubclass(ScriptExhausted, ProviderError)


def test_duplicate_tool_names_are_refused(tmp_path: Path) -> None:
    tools = file_tools(Workspace(tmp_path))

    with pytest.raises(ValueError, match="duplicate tool names"):
        Agent(scripted([]), ScriptedDriver([]), [*tools, *tools])


async def test_tool_calls_beyond_the_limit_are_answered_with_an_error_not_run(
    tmp_path: Path,
) -> None:
    # A model asking for 40 writes in one turn: 5 run, 35 are refused, each still answered.
    writes = [call("write_file", path=f"f{n}.txt", content="x") for n in range(40)]
    spec = scripted([turn(*writes), turn(content="done")], max_tool_calls=5)
    agent = make_agent(spec, tmp_path / "ws")
    state = agent.initial_state("go")

    first, _ = await run(agent, state)

    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == [f"f{n}.txt" for n in range(5)]
    answers = [m for m in first.new_messages if m.role == "tool"]
    assert len(answers) == 40
    assert [m.tool_call_id for m in answers] == [c.id for c in first.new_messages[0].tool_calls]
    refused = [m for m in answers if m.content and "at most 5 tool calls" in m.content]
    assert len(refused) == 35
    assert [e.event_type for e in first.logs].count("tool_called") == 5
    [warning] = [e for e in first.logs if e.event_type == "warning"]
    assert warning.context == {"kind": "tool_call_limit", "limit": 5, "refused": 35}
    assert state.final_answer == "done"
