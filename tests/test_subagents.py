"""Subagents: child executions that run in parallel on any worker, then wake their parent."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

from sqlalchemy import select

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.executions.models import Execution, ExecutionLog
from tests.fixtures.api import api_client, run_to_end
from tests.fixtures.executions import load, start
from tests.fixtures.processes import one_worker, service_env

PARENT_TOML = """
[agent_types.lead]
provider = "scripted"
api_key_env = ""
capabilities = ["subagents"]
subagents = ["helper"]

[[agent_types.lead.script]]
tool_calls = [{ name = "spawn_subagents", arguments = { tasks = [
    { subagent = "helper", prompt = "part 1" },
    { subagent = "helper", prompt = "part 2" },
    { subagent = "helper", prompt = "part 3" },
] } }]

[[agent_types.lead.script]]
content = "Synthesis: {last_user_message}"

[subagents.helper]
provider = "scripted"
api_key_env = ""
description = "Researches one part."

[[subagents.helper.script]]
delay_seconds = 1.5
content = "finding about {prompt}"
"""


def spawn(*prompts: str, subagent: str = "helper") -> ScriptedTurn:
    tasks = [{"subagent": subagent, "prompt": p} for p in prompts]
    return ScriptedTurn(
        tool_calls=[ScriptedToolCall(name="spawn_subagents", arguments={"tasks": tasks})]
    )


def lead(*turns: ScriptedTurn, max_depth: int = 3) -> AgentTypeSpec:
    return AgentTypeSpec(
        provider="scripted", api_key_env=None, capabilities=["subagents"],
        subagents=["helper"], max_depth=max_depth, script=list(turns),
    )  # fmt: skip


def helper(*turns: ScriptedTurn) -> AgentTypeSpec:
    return AgentTypeSpec(
        provider="scripted", api_key_env=None, description="Researches one part.",
        script=list(turns),
    )  # fmt: skip


async def children_of(sessions, parent_id: str) -> list[Execution]:
    async with sessions() as session:
        rows = await session.scalars(
            select(Execution)
            .where(Execution.parent_id == uuid.UUID(parent_id))
            .order_by(Execution.created_at, Execution.id)
        )
        return list(rows)


async def test_three_children_run_in_parallel_on_two_workers_then_the_parent_synthesises(
    settings, tmp_path, alice, sessions, make_settings
):
    config = tmp_path / "agents.toml"
    config.write_text(PARENT_TOML)
    env = service_env(
        settings, tmp_path, AGENTS_CONFIG_FILE=str(config), AGENTS_WORKER__MAX_JOBS="2"
    )
    own = make_settings(
        agent_types={"lead": lead(spawn("part 1", "part 2", "part 3"))},
        subagents={"helper": helper(ScriptedTurn(content="x"))},
    )
    async with api_client(own) as http:
        created = await start(http, alice, "lead")
        workers = [
            subprocess.Popen([sys.executable, "-m", "app.cli", *one_worker(own)], env=env)
            for _ in range(2)
        ]
        try:
            for _ in range(1000):
                body = (
                    await http.get(f"/api/agents/{created['id']}", headers=alice.headers)
                ).json()
                if body["status"] in ("completed", "failed"):
                    break
                await asyncio.sleep(0.02)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(20)
    assert body["status"] == "completed", body
    response = body["output"]["response"]
    assert response.startswith("Synthesis: Results of the 3 subagent(s):")
    for part in ("part 1", "part 2", "part 3"):
        assert f"finding about {part}" in response
    children = await children_of(sessions, created["id"])
    assert [c.status for c in children] == ["completed"] * 3
    assert {c.depth for c in children} == {1}
    assert [c.agent_type for c in children] == ["subagent:helper"] * 3
    assert [child["id"] for child in body["children"]] == [str(c.id) for c in children]
    # They ran at the same time: each started before any of them finished ...
    started = [c.started_at for c in children if c.started_at]
    completed = [c.completed_at for c in children if c.completed_at]
    assert len(started) == len(completed) == 3
    assert max(started) < min(completed)
    # ... on both worker processes (each takes at most two jobs at once).
    async with sessions() as session:
        workers_used = set(
            await session.scalars(
                select(ExecutionLog.context["worker"].astext).where(
                    ExecutionLog.execution_id.in_([c.id for c in children]),
                    ExecutionLog.event_type == "status_changed",
                    ExecutionLog.context["to"].astext == "running",
                )
            )
        )
    assert len(workers_used) == 2


async def test_a_failed_child_is_reported_to_the_parent(alice, make_settings, run_worker):
    both = [{"subagent": "helper", "prompt": "ok"}, {"subagent": "breaker", "prompt": "boom"}]
    parent = lead(
        ScriptedTurn(
            tool_calls=[ScriptedToolCall(name="spawn_subagents", arguments={"tasks": both})]
        ),
        ScriptedTurn(content="{last_user_message}"),
    )
    parent.subagents = ["helper", "breaker"]
    settings = make_settings(
        agent_types={"lead": parent},
        subagents={
            "helper": helper(ScriptedTurn(content="done: {prompt}")),
            "breaker": helper(),  # no script: its first model call fails
        },
    )
    body = await run_to_end(settings, alice.headers, "lead", run_worker)
    assert body["status"] == "completed"
    response = body["output"]["response"]
    assert "## 1. helper (completed)\ndone: ok" in response
    assert "## 2. breaker (failed)\nthe script has 0 turns" in response
    assert [c["status"] for c in body["children"]] == ["completed", "failed"]


async def test_depth_limit_is_an_error_for_the_model(alice, make_settings, run_worker):
    settings = make_settings(
        agent_types={
            "lead": lead(spawn("x"), ScriptedTurn(content="{last_tool_result}"), max_depth=0)
        },
        subagents={"helper": helper(ScriptedTurn(content="never"))},
    )
    body = await run_to_end(settings, alice.headers, "lead", run_worker)
    assert body["status"] == "completed"
    assert body["output"]["response"].startswith("error: subagents may nest at most 0 levels")
    assert body["children"] == []


async def test_unknown_subagent_is_an_error_for_the_model(alice, make_settings, run_worker):
    settings = make_settings(
        agent_types={
            "lead": lead(spawn("x", subagent="nobody"), ScriptedTurn(content="{last_tool_result}"))
        },
        subagents={"helper": helper(ScriptedTurn(content="never"))},
    )
    body = await run_to_end(settings, alice.headers, "lead", run_worker)
    assert body["output"]["response"] == "error: unknown subagent(s) nobody; available: helper"


async def test_cancelling_the_parent_cancels_its_children(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(
        agent_types={"lead": lead(spawn("a", "b"), ScriptedTurn(content="never"))},
        subagents={"helper": helper(ScriptedTurn(content="slow", delay_seconds=5))},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        worker = asyncio.create_task(run_worker(settings))
        for _ in range(500):
            children = await children_of(sessions, created["id"])
            if len(children) == 2 and all(c.status == "running" for c in children):
                break
            await asyncio.sleep(0.01)
        response = await http.post(f"/api/agents/{created['id']}/cancel", headers=alice.headers)
        assert response.json()["status"] == "cancelled"
        await asyncio.wait_for(worker, 3)  # the children's slow steps were interrupted
    children = await children_of(sessions, created["id"])
    assert [c.status for c in children] == ["cancelled", "cancelled"]
    assert all(c.step_count == 0 for c in children)
    assert (await load(sessions, created["id"])).status == "cancelled"


async def test_a_parent_whose_wake_was_lost_is_woken_by_the_sweep(
    alice, sessions, db, redis, make_settings, run_worker
):
    from sqlalchemy import text

    from app.executions.engine import run_execution
    from app.executions.recovery import sweep
    from workers.context import close_context, open_context

    settings = make_settings(
        agent_types={"lead": lead(spawn("a"), ScriptedTurn(content="{last_user_message}"))},
        subagents={"helper": helper(ScriptedTurn(content="never run"))},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        ctx = await open_context(settings)
        ctx["redis"] = redis
        try:
            assert await run_execution(ctx, created["id"], 0) == "ok"  # type: ignore[arg-type]
        finally:
            await close_context(ctx)
        assert (await load(sessions, created["id"])).status == "awaiting_event"
        # The child finished, and its worker died before waking the parent.
        await redis.flushdb()
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE agent_executions SET status = 'completed', "
                    """output = '{"response": "found"}' WHERE parent_id = :id"""
                ),
                {"id": uuid.UUID(created["id"])},
            )
        assert (await sweep(db, redis, settings)).woken == 1
        await run_worker(settings)
        body = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert body["status"] == "completed"
    expected = "Results of the 1 subagent(s):\n\n## 1. helper (completed)\nfound"
    assert body["output"] == {"response": expected}
