"""AgentState must survive JSON (the checkpoint format) without losing anything."""

import json
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from app.agents.state import (
    AgentState,
    Message,
    Role,
    StopReason,
    Task,
    TaskStatus,
    ToolCall,
    Usage,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
counts = st.integers(min_value=0, max_value=2**62)

tool_calls = st.builds(
    ToolCall,
    id=st.text(min_size=1, max_size=12),
    name=st.text(min_size=1, max_size=12),
    arguments=json_objects,
    invalid_arguments=st.none() | st.text(max_size=20),
)
messages = st.builds(
    Message,
    role=st.sampled_from(get_args(Role)),
    content=st.none() | st.text(),
    tool_calls=st.lists(tool_calls, max_size=3),
    tool_call_id=st.none() | st.text(max_size=12),
    name=st.none() | st.text(max_size=12),
)
tasks = st.builds(Task, title=st.text(max_size=20), status=st.sampled_from(get_args(TaskStatus)))
states = st.builds(
    AgentState,
    messages=st.lists(messages, max_size=6),
    usage=st.builds(Usage, input_tokens=counts, output_tokens=counts),
    step_count=counts,
    elapsed_seconds=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    metadata=json_objects,
    final_answer=st.none() | st.text(),
    stop_reason=st.none() | st.sampled_from(get_args(StopReason)),
    tasks=st.lists(tasks, max_size=4),
    pending_question=st.none() | st.text(),
)


@settings(max_examples=75, deadline=None)
@given(states)
def test_state_round_trips_through_json(state: AgentState) -> None:
    # Whole, as model JSON.
    assert AgentState.model_validate_json(state.model_dump_json()) == state

    # As checkpointed: the snapshot and one JSON document per message, each through json.
    snapshot = json.loads(json.dumps(state.snapshot()))
    rows = [json.loads(json.dumps(m.model_dump(mode="json"))) for m in state.messages]
    assert "messages" not in snapshot
    assert AgentState.restore(snapshot, rows) == state


def test_equality_sees_differences() -> None:
    # Guards the property tests above: equality must not be vacuously true.
    state = AgentState(messages=[Message(role="user", content="a")])
    changed = AgentState(messages=[Message(role="user", content="b")])
    assert state != changed
    assert AgentState(tasks=[Task(title="a")]) != AgentState(tasks=[Task(title="a", status="done")])
    assert AgentState(pending_question="?") != AgentState()


def test_snapshots_from_before_tasks_and_questions_restore() -> None:
    old_snapshot = {
        "usage": {"input_tokens": 1, "output_tokens": 2},
        "step_count": 1,
        "elapsed_seconds": 0.5,
        "metadata": {},
        "final_answer": None,
        "stop_reason": None,
    }

    state = AgentState.restore(old_snapshot, [])

    assert state.tasks == []
    assert state.pending_question is None
