"""Subagents as users configure them: the parent's model, tool allow-lists, a shared
workspace, and per-spec summary limits, through the real API and worker."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.config import Settings
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.openai_server import FakeOpenAI, fake_openai, fake_openai_server
from tests.test_subagents import children_of

__all__ = ["fake_openai", "fake_openai_server"]


def call(name: str, **arguments: object) -> ScriptedTurn:
    return ScriptedTurn(tool_calls=[ScriptedToolCall(name=name, arguments=arguments)])


def spawn(*tasks: tuple[str, str]) -> ScriptedTurn:
    return call("spawn_subagents", tasks=[{"subagent": s, "prompt": p} for s, p in tasks])


def tool_call(name: str, arguments: str, call_id: str = "call_1") -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


async def finish(http, account, execution_id: str, run_worker, settings) -> dict[str, Any]:
    await run_worker(settings)
    response = await http.get(f"/api/agents/{execution_id}", headers=account.headers)
    return dict(response.json())


async def test_subagents_run_on_the_parents_model_and_offer_only_their_tools(
    alice, sessions, make_settings, run_worker, fake_openai: FakeOpenAI
):
    """A research type pointed at a local server fans out: its subagents name no provider,
    so they talk to the same server with the same model and no API key."""
    lead = AgentTypeSpec(
        base_url=fake_openai.base_url,
        model="local-model",
        api_key_env=None,
        capabilities=["subagents"],
        subagents=["lookup", "writer"],
    )
    subagents = {
        "lookup": AgentTypeSpec(
            description="Looks things up.",
            system_prompt="You look things up.",
            capabilities=["files"],
            tools=["read_file", "search_files"],
        ),
        "writer": AgentTypeSpec(system_prompt="You write.", capabilities=["files", "tasks"]),
    }
    settings = make_settings(agent_types={"lead": lead}, subagents=subagents)
    fake_openai.enqueue_completion(
        tool_calls=[
            tool_call(
                "spawn_subagents",
                '{"tasks": [{"subagent": "lookup", "prompt": "a"},'
                ' {"subagent": "writer", "prompt": "b"}]}',
            )
        ]
    )
    fake_openai.enqueue_completion("child answer")
    fake_openai.enqueue_completion("child answer")
    fake_openai.enqueue_completion("all done")
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["status"] == "completed", done
    children = await children_of(sessions, created["id"])
    assert [c.status for c in children] == ["completed", "completed"]
    assert all(c.inherited and c.inherited["model"] == "local-model" for c in children)
    requests = [r.json for r in fake_openai.requests]
    assert len(requests) == 4
    assert {r["model"] for r in requests} == {"local-model"}
    assert all("authorization" not in r.headers for r in fake_openai.requests)
    offered = {
        r["messages"][0]["content"]: sorted(t["function"]["name"] for t in r.get("tools", []))
        for r in requests
    }
    assert offered["You look things up."] == ["read_file", "search_files"]
    assert offered["You write."] == [
        "edit_file", "list_files", "read_file", "search_files", "task_plan", "write_file"
    ]  # fmt: skip


async def test_a_spec_that_names_its_model_keeps_it(
    alice, sessions, make_settings, run_worker, fake_openai: FakeOpenAI
):
    lead = AgentTypeSpec(
        base_url=fake_openai.base_url,
        model="parent-model",
        api_key_env=None,
        capabilities=["subagents"],
        subagents=["own"],
    )
    own = AgentTypeSpec(model="child-model", max_retries=0)
    settings = make_settings(agent_types={"lead": lead}, subagents={"own": own})
    fake_openai.enqueue_completion(
        tool_calls=[tool_call("spawn_subagents", '{"tasks": [{"subagent": "own", "prompt": "x"}]}')]
    )
    fake_openai.enqueue_completion("child")
    fake_openai.enqueue_completion("parent")
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["status"] == "completed", done
    assert [r.json["model"] for r in fake_openai.requests] == [
        "parent-model", "child-model", "parent-model"
    ]  # fmt: skip


async def test_subagents_share_the_parents_workspace_when_their_spec_says_so(
    alice, sessions, make_settings, run_worker
):
    """The research pattern: the parent leaves a brief, a subagent working in the parent's
    workspace reads it and writes its findings there, the parent reads them; a subagent with
    a workspace of its own sees none of it."""
    lead = AgentTypeSpec(
        provider="scripted",
        capabilities=["files", "subagents"],
        subagents=["researcher", "loner"],
        script=[
            call("write_file", path="brief.md", content="the brief"),
            spawn(("researcher", "go"), ("loner", "go")),
            call("read_file", path="findings.md"),
            ScriptedTurn(content="{last_tool_result}"),
        ],
    )
    researcher = AgentTypeSpec(
        provider="scripted",
        capabilities=["files"],
        workspace="parent",
        script=[
            call("read_file", path="brief.md"),
            call("write_file", path="findings.md", content="found in: {last_tool_result}"),
            ScriptedTurn(content="written"),
        ],
    )
    loner = AgentTypeSpec(
        provider="scripted",
        capabilities=["files"],
        script=[call("read_file", path="brief.md"), ScriptedTurn(content="{last_tool_result}")],
    )
    settings = make_settings(
        agent_types={"lead": lead}, subagents={"researcher": researcher, "loner": loner}
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["status"] == "completed", done
    assert done["output"]["response"] == "found in: the brief"
    shared = settings.workspace_base / created["id"]
    assert sorted(p.name for p in shared.iterdir()) == ["brief.md", "findings.md"]
    researcher_row, loner_row = await children_of(sessions, created["id"])
    assert researcher_row.workspace_id == uuid.UUID(created["id"])
    assert loner_row.workspace_id is None
    assert loner_row.output == {"response": "error: no such file: brief.md"}
    assert not (settings.workspace_base / str(researcher_row.id)).exists()


async def test_a_tool_outside_the_allow_list_is_an_error_the_model_sees(
    alice, make_settings, run_worker
):
    reader = AgentTypeSpec(
        provider="scripted",
        capabilities=["files"],
        tools=["read_file"],
        script=[
            call("write_file", path="x", content="y"),
            ScriptedTurn(content="{last_tool_result}"),
        ],
    )
    settings = make_settings(agent_types={"reader": reader})
    async with api_client(settings) as http:
        created = await start(http, alice, "reader")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["output"]["response"] == (
        "error: unknown tool 'write_file' (available tools: read_file)"
    )
    assert not (settings.workspace_base / created["id"] / "x").exists()


async def test_a_subagents_own_summary_limit_cuts_its_result(alice, make_settings, run_worker):
    lead = AgentTypeSpec(
        provider="scripted",
        capabilities=["subagents"],
        subagents=["brief", "verbose"],
        summary_max_chars=1000,
        script=[
            spawn(("brief", "x"), ("verbose", "x")),
            ScriptedTurn(content="{last_user_message}"),
        ],
    )
    long_answer = "0123456789" * 5
    brief = AgentTypeSpec(
        provider="scripted", summary_max_chars=12, script=[ScriptedTurn(content=long_answer)]
    )
    verbose = AgentTypeSpec(provider="scripted", script=[ScriptedTurn(content=long_answer)])
    settings = make_settings(
        agent_types={"lead": lead}, subagents={"brief": brief, "verbose": verbose}
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    response = str(done["output"]["response"])
    assert f"brief (completed)\n{long_answer[:12]}\n[... truncated ...]" in response
    assert f"verbose (completed)\n{long_answer}" in response


def test_inheritance_takes_only_what_the_spec_leaves_unset() -> None:
    parent = AgentTypeSpec(
        provider="openai", model="m", base_url="http://local/v1", api_key_env=None, max_retries=1
    )
    child = AgentTypeSpec(model="own-model", request_timeout=5)

    effective = child.inherit(parent.inheritance())

    assert effective.model == "own-model"
    assert effective.request_timeout == 5
    assert effective.base_url == "http://local/v1"
    assert effective.api_key_env is None
    assert effective.max_retries == 1
    anthropic = AgentTypeSpec(provider="anthropic").inherit(parent.inheritance())
    assert anthropic.base_url == "https://api.anthropic.com"  # its provider's, not the parent's


def test_tools_must_come_from_the_capabilities() -> None:
    with pytest.raises(ValidationError, match="tools bash are not given by the capabilities"):
        Settings.model_validate(
            {"subagents": {"x": {"capabilities": ["files"], "tools": ["read_file", "bash"]}}}
        )


async def test_a_step_over_the_subagent_limit_gets_an_error_and_starts_nothing(
    alice, sessions, make_settings, run_worker
):
    lead = AgentTypeSpec(
        provider="scripted",
        capabilities=["subagents"],
        subagents=["helper"],
        script=[
            spawn(("helper", "a"), ("helper", "b"), ("helper", "c")),
            ScriptedTurn(content="{last_tool_result}"),
        ],
    )
    helper = AgentTypeSpec(provider="scripted", script=[ScriptedTurn(content="done")])
    settings = make_settings(
        agent_types={"lead": lead},
        subagents={"helper": helper},
        tiers={"pro": {"concurrent": 5, "per_hour": 100, "max_descendants": 2}},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["status"] == "completed"
    assert done["output"]["response"].startswith("error: subagent limit reached: 0 subagent(s)")
    assert await children_of(sessions, created["id"]) == []


async def test_siblings_spawning_at_once_stay_within_the_trees_limit(
    alice, sessions, make_settings, run_worker
):
    """Two subagents each ask for two more at the same moment; the tree may run four at once,
    so exactly one of them gets its pair (the leaves run long enough to still count)."""
    lead = AgentTypeSpec(
        provider="scripted",
        capabilities=["subagents"],
        subagents=["middle"],
        script=[
            spawn(("middle", "x"), ("middle", "y")),
            ScriptedTurn(content="{last_user_message}"),
        ],
    )
    middle = AgentTypeSpec(
        provider="scripted",
        capabilities=["subagents"],
        subagents=["leaf"],
        script=[
            spawn(("leaf", "1"), ("leaf", "2")),
            ScriptedTurn(content="{last_tool_result}"),
        ],
    )
    leaf = AgentTypeSpec(
        provider="scripted", script=[ScriptedTurn(content="leaf done", delay_seconds=1.0)]
    )
    settings = make_settings(
        agent_types={"lead": lead},
        subagents={"middle": middle, "leaf": leaf},
        tiers={"pro": {"concurrent": 5, "per_hour": 100, "max_descendants": 4}},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "lead")
        done = await finish(http, alice, created["id"], run_worker, settings)

    assert done["status"] == "completed", done
    middles = await children_of(sessions, created["id"])
    leaves = [await children_of(sessions, str(m.id)) for m in middles]
    assert sorted(len(found) for found in leaves) == [0, 2]
    refused = next(m for m, found in zip(middles, leaves, strict=True) if not found)
    assert refused.output is not None
    assert refused.output["response"].startswith("error: subagent limit reached: 4 subagent(s)")


async def test_the_tree_lock_is_held_until_the_spawning_step_commits(alice, client, db):
    """On the worker's autocommit engine the budget check must still run in one transaction,
    or siblings could both pass it."""
    from sqlalchemy import text

    from app.db import transaction_connection
    from app.executions import worker_repository

    created = await start(client, alice, "steps-3")
    execution_id = uuid.UUID(created["id"])
    worker_engine = db.execution_options(isolation_level="AUTOCOMMIT")
    probe = text("SELECT pg_try_advisory_lock(7301, hashtext(:root))")
    release = text("SELECT pg_advisory_unlock(7301, hashtext(:root))")

    async with transaction_connection(worker_engine) as conn:
        budget = await worker_repository.lock_subagent_budget(conn, execution_id)
        async with worker_engine.connect() as other:
            held_elsewhere = not (await other.execute(probe, {"root": str(execution_id)})).scalar()
    async with worker_engine.connect() as other:
        free_after = (await other.execute(probe, {"root": str(execution_id)})).scalar()
        await other.execute(release, {"root": str(execution_id)})

    assert budget.root_id == execution_id
    assert (budget.unfinished, budget.children) == (0, 0)
    assert held_elsewhere
    assert free_after
