"""Subagents spend their root's token budget: their tokens roll up into the root, and the tree
stops at the root's ``max_tokens``."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.agents.spec import ScriptedToolCall, ScriptedTurn
from app.executions.models import Execution
from tests.fixtures.api import run_to_end
from tests.test_subagents import helper, lead, spawn


def costly(steps: int, tokens: int) -> list[ScriptedTurn]:
    """``steps`` turns of ``tokens`` tokens each (three quarters input), the last one answering."""
    inputs, outputs = tokens * 3 // 4, tokens - tokens * 3 // 4
    calls = [ScriptedToolCall(name="list_files", arguments={})]
    return [
        ScriptedTurn(tool_calls=calls, input_tokens=inputs, output_tokens=outputs)
        for _ in range(steps - 1)
    ] + [ScriptedTurn(content="found {prompt}", input_tokens=inputs, output_tokens=outputs)]


async def tree(sessions, root_id: str) -> list[Execution]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Execution).where(Execution.root_id == uuid.UUID(root_id))
        )
        return list(rows)


async def test_descendant_tokens_roll_up_into_the_root(alice, sessions, make_settings, run_worker):
    parent = lead(spawn("a", "b"), ScriptedTurn(content="{last_user_message}"))
    # Each child starts a grandchild: three levels under one root.
    middle = helper(
        ScriptedTurn(tool_calls=spawn("deeper", subagent="leaf").tool_calls, input_tokens=100),
        ScriptedTurn(content="done {prompt}", output_tokens=7),
    )
    middle.capabilities, middle.subagents = ["subagents"], ["leaf"]
    settings = make_settings(
        agent_types={"lead": parent},
        subagents={"helper": middle, "leaf": helper(*costly(2, 40))},
    )
    body = await run_to_end(settings, alice.headers, "lead", run_worker)
    assert body["status"] == "completed", body
    below = await tree(sessions, body["id"])
    assert len(below) == 4  # two children, two grandchildren
    assert {e.depth for e in below} == {1, 2}
    assert all(e.status == "completed" for e in below)
    assert body["descendant_tokens"] == sum(e.token_usage for e in below) > 0
    assert body["token_usage"] == 2 * (10 + 5)  # its own two steps only
    assert [c["token_usage"] for c in body["children"]] == [
        e.token_usage for e in sorted(below, key=lambda e: e.created_at) if e.depth == 1
    ]
    for execution in below:
        assert execution.descendant_tokens == 0  # only the root sums its tree


async def test_the_tree_stops_at_its_roots_max_tokens(alice, sessions, make_settings, run_worker):
    # The root may spend 3,000 tokens in all; three subagents of 8 x 200 would spend 4,800.
    parent = lead(spawn("a", "b", "c"), ScriptedTurn(content="{last_user_message}"))
    parent.max_tokens = 3_000
    settings = make_settings(
        agent_types={"lead": parent}, subagents={"helper": helper(*costly(8, 200))}
    )
    body = await run_to_end(settings, alice.headers, "lead", run_worker)
    below = await tree(sessions, body["id"])
    assert len(below) == 3
    spent = sum(e.token_usage for e in below)
    assert body["descendant_tokens"] == spent
    # Each running subagent may finish the step it is in: at most one step each over.
    assert 3_000 - body["token_usage"] <= spent <= 3_000 + 3 * 200
    failed = [e for e in below if e.status == "failed"]
    assert failed, [e.status for e in below]
    assert {e.error["type"] for e in failed if e.error} == {"max_tokens_exceeded"}
    # The root, woken with their results, has nothing left to spend.
    assert body["status"] == "failed"
    assert body["error"]["type"] == "max_tokens_exceeded"
