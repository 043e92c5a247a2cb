"""The task_plan tool: the plan lives in the agent state and is shown to the model."""

import json
from contextlib import aclosing

import pytest

from app.agents.state import AgentState, Message, Task
from app.agents.task_tools import MAX_TASKS, TaskPlan, render_plan
from app.agents.tools import ToolContext
from tests.agents.scripting import Sleep, call, recording_agent, run, turn

PLAN = [
    {"title": "read the code", "status": "done"},
    {"title": "write the tests", "status": "in_progress"},
    {"title": "ship it", "status": "pending"},
]


async def test_task_plan_replaces_the_plan() -> None:
    context = ToolContext(tasks=[Task(title="old", status="done")])

    result = await TaskPlan().invoke({"tasks": PLAN}, context)

    assert result == "plan updated: 3 tasks (1 done, 1 in progress, 1 pending)"
    assert context.tasks == [Task.model_validate(task) for task in PLAN]

    assert await TaskPlan().invoke({"tasks": [{"title": "only"}]}, context) == (
        "plan updated: 1 tasks (0 done, 0 in progress, 1 pending)"
    )
    assert context.tasks == [Task(title="only", status="pending")]

    assert await TaskPlan().invoke({"tasks": []}, context) == "plan cleared"
    assert context.tasks == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"tasks": [{"title": "a", "status": "blocked"}]},
            "error: invalid arguments for task_plan: tasks.0.status: "
            "Input should be 'pending', 'in_progress' or 'done'",
        ),
        (
            {"tasks": [{"title": "a"}, {"status": "done"}]},
            "error: invalid arguments for task_plan: tasks.1.title: Field required",
        ),
        (
            {"tasks": [{"title": ""}]},
            "error: invalid arguments for task_plan: tasks.0.title: "
            "String should have at least 1 character",
        ),
        (
            {"tasks": [{"title": "a", "owner": "me"}]},
            "error: invalid arguments for task_plan: tasks.0.owner: Extra inputs",
        ),
        ({"tasks": "a, b"}, "error: invalid arguments for task_plan: tasks: Input should be"),
        ({}, "error: invalid arguments for task_plan: tasks: Field required"),
        (
            {"tasks": [{"title": str(i)} for i in range(MAX_TASKS + 1)]},
            f"error: invalid arguments for task_plan: tasks: List should have at most {MAX_TASKS}",
        ),
    ],
)
async def test_invalid_plans_are_refused(arguments: dict[str, object], message: str) -> None:
    context = ToolContext(tasks=[Task(title="kept")])

    assert (await TaskPlan().invoke(arguments, context)).startswith(message)
    assert context.tasks == [Task(title="kept")]


def test_render_plan() -> None:
    assert render_plan([Task.model_validate(task) for task in PLAN]) == (
        "Current plan ([x] done, [~] in progress, [ ] pending):\n"
        "[x] read the code\n"
        "[~] write the tests\n"
        "[ ] ship it"
    )


async def test_the_model_sees_the_plan_but_messages_do_not_store_it() -> None:
    updated = [{**task, "status": "done"} for task in PLAN[:2]] + PLAN[2:]
    agent, driver = recording_agent(
        [
            turn(call("task_plan", tasks=PLAN)),
            turn(call("task_plan", tasks=updated)),
            turn(content="done"),
        ],
        [TaskPlan()],
    )
    state = agent.initial_state("go")

    records = await run(agent, state)

    assert [r.tool_names for r in records] == [["task_plan"], ["task_plan"], []]
    assert state.tasks == [Task.model_validate(task) for task in updated]
    first, second, third = (request[0] for request in driver.requests)
    assert first == Message(role="system", content="system prompt")
    assert second.content == (
        "system prompt\n\nCurrent plan ([x] done, [~] in progress, [ ] pending):\n"
        "[x] read the code\n[~] write the tests\n[ ] ship it"
    )
    assert third.content == (
        "system prompt\n\nCurrent plan ([x] done, [~] in progress, [ ] pending):\n"
        "[x] read the code\n[x] write the tests\n[ ] ship it"
    )
    # Only what was sent carries the plan: the stored conversation keeps the system prompt.
    assert state.messages[0] == Message(role="system", content="system prompt")
    assert all(len(request) == n for request, n in zip(driver.requests, [2, 4, 6], strict=True))


async def test_plan_without_a_system_prompt() -> None:
    agent, driver = recording_agent([turn(call("task_plan", tasks=PLAN[:1])), turn()], [TaskPlan()])
    state = AgentState(messages=[Message(role="user", content="go")])

    await run(agent, state)

    assert driver.requests[1][0] == Message(
        role="system",
        content="Current plan ([x] done, [~] in progress, [ ] pending):\n[x] read the code",
    )
    assert driver.requests[1][1:] == state.messages[:3]


async def test_the_plan_survives_snapshot_and_restore() -> None:
    script = [turn(call("task_plan", tasks=PLAN)), turn(content="done")]
    agent, _ = recording_agent(script, [TaskPlan()])
    state = agent.initial_state("go")
    async with aclosing(agent.iterate(state)) as steps:
        async for _record in steps:
            break

    snapshot = json.loads(json.dumps(state.snapshot()))
    rows = json.loads(json.dumps([m.model_dump(mode="json") for m in state.messages]))
    restored = AgentState.restore(snapshot, rows)
    # A fresh agent, as in another worker process.
    resumed, driver = recording_agent(script, [TaskPlan()])
    await run(resumed, restored)

    assert snapshot["tasks"] == PLAN
    assert restored.tasks == state.tasks == [Task.model_validate(task) for task in PLAN]
    assert driver.requests[0][0].content == "system prompt\n\n" + render_plan(restored.tasks)


async def test_a_step_cut_short_leaves_the_plan_alone() -> None:
    agent, _ = recording_agent(
        [turn(call("task_plan", tasks=PLAN), call("sleep", seconds=5))],
        [TaskPlan(), Sleep()],
        timeout=0.2,
    )
    state = agent.initial_state("go")
    state.tasks = [Task(title="before")]

    assert await run(agent, state) == []

    assert state.stop_reason == "timeout"
    assert state.tasks == [Task(title="before")]
