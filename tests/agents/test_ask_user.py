"""ask_user: the agent parks with the question, and continues once answered."""

import json
from pathlib import Path

import pytest

from app.agents.ask_user import QUESTION_SENT, AskUser
from app.agents.file_tools import file_tools
from app.agents.state import AgentState, Message
from app.agents.tools import ToolContext
from app.agents.workspace import Workspace
from tests.agents.scripting import call, recording_agent, run, turn


async def test_the_tool_records_the_question() -> None:
    context = ToolContext()

    assert await AskUser().invoke({"question": "Which colour?"}, context) == QUESTION_SENT
    assert context.questions == ["Which colour?"]
    assert QUESTION_SENT == (
        "The question was sent to the user; their answer follows as a user message."
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "error: invalid arguments for ask_user: question: Field required"),
        ({"question": ""}, "error: invalid arguments for ask_user: question: String should"),
        ({"question": "  \n"}, "error: the question is empty"),
    ],
)
async def test_invalid_questions(arguments: dict[str, object], message: str) -> None:
    context = ToolContext()

    assert (await AskUser().invoke(arguments, context)).startswith(message)
    assert context.questions == []


async def test_ask_park_answer_continue(tmp_path: Path) -> None:
    script = [
        turn(
            call("write_file", path="a.txt", content="draft"),
            call("ask_user", question="Which colour?"),
            call("read_file", path="a.txt"),
            content="I need to know.",
        ),
        turn(call("write_file", path="a.txt", content="{last_tool_result}")),
        turn(content="painted"),
    ]
    agent, driver = recording_agent(script, [*file_tools(Workspace(tmp_path)), AskUser()])
    state = agent.initial_state("paint it")

    records = await run(agent, state)

    # The step ran all its tool calls, then the run parked.
    assert len(records) == 1
    record = records[0]
    assert record.kind == "tool_calls"
    assert record.tool_names == ["write_file", "ask_user", "read_file"]
    assert [m.content for m in record.new_messages[1:]] == [
        "wrote 5 bytes to a.txt",
        QUESTION_SENT,
        "draft",
    ]
    assert record.new_messages[2].tool_call_id == "call_0_1"
    assert state.stop_reason == "awaiting_input"
    assert state.pending_question == "Which colour?"
    assert state.final_answer is None
    assert state.step_count == 1

    # Parked: iterating again does nothing (the script's next turn is not played).
    assert await run(agent, state) == []
    assert len(driver.requests) == 1

    # Checkpointed while parked, restored elsewhere.
    snapshot = json.loads(json.dumps(state.snapshot()))
    rows = json.loads(json.dumps([m.model_dump(mode="json") for m in state.messages]))
    restored = AgentState.restore(snapshot, rows)
    assert restored == state
    assert snapshot["pending_question"] == "Which colour?"
    assert snapshot["stop_reason"] == "awaiting_input"

    answer = agent.answer(restored, "Blue, please")

    assert answer == Message(role="user", content="Blue, please")
    assert restored.messages[-1] is answer
    assert restored.pending_question is None
    assert restored.stop_reason is None

    records = await run(agent, restored)

    assert [r.kind for r in records] == ["tool_calls", "final"]
    assert restored.stop_reason == "final_answer"
    assert restored.final_answer == "painted"
    # The model's next request ended with the user's answer.
    assert driver.requests[1][-1] == Message(role="user", content="Blue, please")
    assert driver.requests[1][-2].content == "draft"
    assert [m.role for m in restored.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_several_questions_in_one_step_are_asked_together() -> None:
    agent, _ = recording_agent(
        [turn(call("ask_user", question="Which colour?"), call("ask_user", question="When?"))],
        [AskUser()],
    )
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert [m.content for m in records[0].new_messages[1:]] == [QUESTION_SENT, QUESTION_SENT]
    assert state.pending_question == "Which colour?\n\nWhen?"
    assert state.stop_reason == "awaiting_input"


async def test_a_refused_question_does_not_park() -> None:
    agent, _ = recording_agent(
        [turn(call("ask_user", question=" ")), turn(call("ask_user")), turn(content="fine")],
        [AskUser()],
    )
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert [r.kind for r in records] == ["tool_calls", "tool_calls", "final"]
    assert state.pending_question is None
    assert state.stop_reason == "final_answer"


async def test_without_the_capability_ask_user_is_unknown() -> None:
    agent, _ = recording_agent([turn(call("ask_user", question="?")), turn(content="ok")], [])
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert records[0].new_messages[1].content == (
        "error: unknown tool 'ask_user' (available tools: none)"
    )
    assert state.stop_reason == "final_answer"


@pytest.mark.parametrize("stop_reason", [None, "final_answer", "max_steps"])
def test_answer_needs_a_pending_question(stop_reason: str | None) -> None:
    agent, _ = recording_agent([], [AskUser()])
    state = agent.initial_state("go")
    state.stop_reason = stop_reason  # type: ignore[assignment]

    with pytest.raises(ValueError, match="not awaiting input"):
        agent.answer(state, "yes")

    assert len(state.messages) == 2
    assert state.stop_reason == stop_reason


async def test_limits_still_apply_after_an_answer() -> None:
    agent, _ = recording_agent(
        [turn(call("ask_user", question="?")), turn(content="never")], [AskUser()], max_steps=1
    )
    state = agent.initial_state("go")
    await run(agent, state)

    agent.answer(state, "yes")

    assert await run(agent, state) == []
    assert state.stop_reason == "max_steps"
