"""Lifecycle control through the API: the transition table, pause/resume, cancel, force kill,
and races. Real worker, real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from sqlalchemy import select, text

from app.executions.models import ExecutionLog, ExecutionSignal
from tests.conftest import scripted_type
from tests.fixtures.api import api_client
from tests.fixtures.executions import load, start, step_numbers

STATUSES = [
    "pending", "scheduled", "running", "paused", "awaiting_input", "awaiting_event",
    "completed", "failed", "cancelled",
]  # fmt: skip

# (signal, from status) -> status after, for accepted requests; anything else is a 409.
ACCEPTED = {
    **{("pause", s): "paused" for s in ("pending", "scheduled", "awaiting_event", "paused")},
    ("pause", "running"): "running",  # deferred to the next step boundary
    ("resume", "paused"): "pending",
    **{(sig, s): "cancelled" for sig in ("cancel", "kill") for s in STATUSES[:6] + ["cancelled"]},
    ("input", "awaiting_input"): "pending",
}

# The rows a step writes besides status rows: its tool calls, warnings, and its own row.
STEP_ROWS = ("tool_called", "tool_completed", "warning", "step_completed")


async def set_status(db, execution_id: str, status: str) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_executions SET status = :s WHERE id = :id"),
            {"s": status, "id": uuid.UUID(execution_id)},
        )


async def control(client, account, execution_id: str, signal: str, answer: str = "yes"):
    if signal == "kill":
        return await client.delete(f"/api/agents/{execution_id}", headers=account.headers)
    body = {"input": {"answer": answer}} if signal == "input" else None
    return await client.post(
        f"/api/agents/{execution_id}/{signal}", json=body, headers=account.headers
    )


@pytest.mark.parametrize("signal", ["pause", "resume", "cancel", "kill", "input"])
@pytest.mark.parametrize("status", STATUSES)
async def test_transition_table(client, alice, db, sessions, redis, status, signal):
    created = await start(client, alice, "steps-3")
    await redis.flushdb()
    await set_status(db, created["id"], status)
    before = await load(sessions, created["id"])
    response = await control(client, alice, created["id"], signal)
    after = await load(sessions, created["id"])
    expected = ACCEPTED.get((signal, status))
    if expected is None:
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["type"] == "/problems/illegal-transition"
        assert body["status"] == 409
        assert body["current_status"] == status
        assert status in body["detail"]
        assert response.headers["content-type"] == "application/problem+json"
        assert (after.status, after.lease) == (status, before.lease)
        return
    assert response.status_code == 202, response.text
    assert response.json() == {"status": expected, "signal": signal, "accepted": True}
    assert after.status == expected
    changed = expected != status
    # Cancel and kill fence off the worker; resume gives the next job a fresh id.
    bumped = changed and signal in ("cancel", "kill", "resume")
    assert after.lease == before.lease + (1 if bumped else 0)
    if signal == "kill" and changed:
        assert after.metadata_["force_killed"] is True
    if expected == "pending":  # resumed or answered: its job is queued again
        assert await redis.exists(f"arq:job:{created['id']}:{after.lease}")
    async with sessions() as session:
        signals = list(
            await session.scalars(
                select(ExecutionSignal).where(ExecutionSignal.execution_id == after.id)
            )
        )
        events = list(
            await session.scalars(
                select(ExecutionLog.event_type).where(ExecutionLog.execution_id == after.id)
            )
        )
    if changed:
        # An answer is a delivery: it stays unprocessed until the worker hands it to the agent.
        delivered_later = signal == "input"
        assert [(s.signal_type, s.processed, s.created_by) for s in signals] == [
            (signal, not delivered_later, alice.user.id)
        ]
        name = {"pause": "paused", "resume": "resumed", "cancel": "cancelled",
                "kill": "force_killed", "input": "input_received"}[signal]  # fmt: skip
        assert events[-1] == name
    elif status == "running":
        assert [(s.signal_type, s.processed) for s in signals] == [("pause", False)]
    else:
        assert signals == []


async def test_control_of_another_users_execution_is_not_found(client, alice, bob):
    created = await start(client, alice, "steps-3")
    for signal in ("pause", "resume", "cancel", "kill", "input"):
        response = await control(client, bob, created["id"], signal)
        assert response.status_code == 404
    assert (await client.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()[
        "status"
    ] == "pending"


async def test_input_needs_an_answer(client, alice):
    created = await start(client, alice, "steps-3")
    response = await client.post(
        f"/api/agents/{created['id']}/input", json={"input": {}}, headers=alice.headers
    )
    assert response.status_code == 422


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_pause_then_resume_loses_and_repeats_no_step(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"slow": scripted_type(8, delay=0.1)})
    async with api_client(settings) as http:
        created = await start(http, alice, "slow")
        worker = asyncio.create_task(run_worker(settings))

        async def two_steps() -> bool:
            return len(await step_numbers(sessions, created["id"])) >= 2

        await wait_for(two_steps)
        paused = await control(http, alice, created["id"], "pause")
        assert paused.json() == {"status": "running", "signal": "pause", "accepted": True}
        await worker  # the burst worker ends: a paused execution holds no worker
        execution = await load(sessions, created["id"])
        assert execution.status == "paused"
        done = await step_numbers(sessions, created["id"])
        assert done == list(range(1, execution.step_count + 1))
        assert execution.step_count < 8
        assert execution.state_snapshot is not None
        assert execution.state_snapshot["step_count"] == execution.step_count
        resumed = await control(http, alice, created["id"], "resume")
        assert resumed.json()["status"] == "pending"
        await run_worker(settings)
    assert (await load(sessions, created["id"])).status == "completed"
    assert await step_numbers(sessions, created["id"]) == list(range(1, 9))
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(ExecutionLog.event_type)
                .where(ExecutionLog.execution_id == uuid.UUID(created["id"]))
                .order_by(ExecutionLog.id)
            )
        )
    assert [e for e in rows if e not in STEP_ROWS] == [
        "status_changed", "status_changed", "paused", "resumed", "status_changed", "completed",
    ]  # fmt: skip
    # Nor any tool call: steps 1-7 each called list_files once, step 8 answered.
    assert [e for e in rows if e in STEP_ROWS] == [
        *["tool_called", "tool_completed", "step_completed"] * 7,
        "step_completed",
    ]


async def test_force_kill_fences_off_a_worker_that_ignores_the_control_channel(
    client, alice, sessions, settings, make_settings
):
    from app.executions.engine import run_execution
    from workers.context import close_context, open_context

    hung_settings = make_settings(agent_types={"slow": scripted_type(3, delay=0.5)})
    created = await start(client, alice, "steps-3")
    # The hung worker runs "slow" steps and never listens to its control channel.
    ctx = await open_context(hung_settings)
    async with api_client(hung_settings) as http:
        created = await start(http, alice, "slow")
        from app.redis import arq_pool

        assert hung_settings.redis_url
        ctx["redis"] = await arq_pool(hung_settings.redis_url)
        job = asyncio.create_task(run_execution(ctx, created["id"], 0))  # type: ignore[arg-type]

        async def claimed() -> bool:
            return (await load(sessions, created["id"])).status == "running"

        await wait_for(claimed)
        killed = await control(http, alice, created["id"], "kill")
        assert killed.json() == {"status": "cancelled", "signal": "kill", "accepted": True}
        assert await job == "lease lost"
    await ctx["redis"].aclose()
    await close_context(ctx)
    execution = await load(sessions, created["id"])
    assert execution.status == "cancelled"
    assert execution.metadata_ == {"force_killed": True}
    assert execution.step_count == 0
    assert await step_numbers(sessions, created["id"]) == []


async def test_cancel_interrupts_a_slow_model_call_at_once(
    alice, sessions, make_settings, run_worker, monkeypatch
):
    from app.agents.spec import AgentTypeSpec
    from tests.fixtures.openai_server import openai_server

    async with openai_server() as fake:
        fake.enqueue(200, {"never": "sent"}, delay=30)
        spec = AgentTypeSpec(
            provider="openai", base_url=fake.base_url, model="m", api_key_env=None, max_retries=0
        )
        settings = make_settings(agent_types={"remote": spec})
        async with api_client(settings) as http:
            created = await start(http, alice, "remote")
            worker = asyncio.create_task(run_worker(settings))

            async def calling() -> bool:
                return len(fake.requests) == 1

            await wait_for(calling)
            loop = asyncio.get_running_loop()
            began = loop.time()
            cancelled = await control(http, alice, created["id"], "cancel")
            assert cancelled.json()["status"] == "cancelled"
            await asyncio.wait_for(worker, 1.0)  # the step was interrupted, not waited for
            assert loop.time() - began < 1.0
    execution = await load(sessions, created["id"])
    assert (execution.status, execution.step_count) == ("cancelled", 0)
    assert execution.completed_at is not None


async def test_concurrent_mixed_requests_end_in_one_consistent_state(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"slow": scripted_type(30, delay=0.02)})
    rng = random.Random(7)
    async with api_client(settings) as http:
        created = await start(http, alice, "slow")
        worker = asyncio.create_task(run_worker(settings))

        async def started() -> bool:
            return len(await step_numbers(sessions, created["id"])) >= 1

        await wait_for(started)
        signals = [rng.choice(["pause", "resume", "cancel", "pause", "resume"]) for _ in range(50)]
        responses = await asyncio.gather(*(control(http, alice, created["id"], s) for s in signals))
        await worker
        # Whatever is still paused or pending gets to finish.
        await run_worker(settings)
    assert {r.status_code for r in responses} <= {202, 409}
    execution = await load(sessions, created["id"])
    async with sessions() as session:
        changes = list(
            await session.scalars(
                select(ExecutionLog)
                .where(ExecutionLog.execution_id == execution.id)
                .where(ExecutionLog.event_type.not_in(STEP_ROWS))
                .order_by(ExecutionLog.id)
            )
        )
    # The log explains every change: each starts where the previous one ended.
    chain = [(c.context["from"], c.context["to"]) for c in changes]
    for (_, to), (frm, _) in zip(chain, chain[1:], strict=False):
        assert frm == to
    assert chain[-1][1] == execution.status
    if any(r.status_code == 202 and r.json()["signal"] == "cancel" for r in responses):
        assert execution.status == "cancelled"
    else:
        assert execution.status in ("completed", "paused")
    steps = await step_numbers(sessions, str(execution.id))
    assert steps == list(range(1, len(steps) + 1))
    # Every committed step but a final answer called one tool, logged once.
    async with sessions() as session:
        tool_rows = list(
            await session.scalars(
                select(ExecutionLog.event_type)
                .where(ExecutionLog.execution_id == execution.id)
                .where(ExecutionLog.event_type.in_(("tool_called", "tool_completed")))
            )
        )
    with_tools = len(steps) - (1 if execution.status == "completed" else 0)
    assert sorted(tool_rows) == ["tool_called"] * with_tools + ["tool_completed"] * with_tools


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.2])
async def test_cancel_racing_the_final_step_never_ends_both_ways(
    alice, sessions, make_settings, run_worker, delay
):
    settings = make_settings(agent_types={"one": scripted_type(1, delay=0.1)})
    async with api_client(settings) as http:
        created = await start(http, alice, "one")
        worker = asyncio.create_task(run_worker(settings))
        await asyncio.sleep(delay)
        response = await control(http, alice, created["id"], "cancel")
        await worker
    execution = await load(sessions, created["id"])
    async with sessions() as session:
        events = list(
            await session.scalars(
                select(ExecutionLog.event_type)
                .where(ExecutionLog.execution_id == execution.id)
                .order_by(ExecutionLog.id)
            )
        )
    if response.status_code == 202:
        assert execution.status == "cancelled"
        assert events[-1] == "cancelled"  # nothing written after the terminal state
        assert execution.output is None
    else:
        assert response.status_code == 409
        assert execution.status == "completed"
        assert "cancelled" not in events


async def test_resume_runs_an_execution_whose_job_ran_while_it_was_paused(
    client, alice, run_worker, sessions
):
    created = await start(client, alice, "steps-3")
    assert (await control(client, alice, created["id"], "pause")).status_code == 202
    # Its queued job runs while it is paused: it finds nothing to claim, and arq keeps its result.
    await run_worker()
    assert (await load(sessions, created["id"])).status == "paused"
    assert (await control(client, alice, created["id"], "resume")).status_code == 202
    await run_worker()
    execution = await load(sessions, created["id"])
    assert (execution.status, execution.step_count) == ("completed", 3)


async def test_input_round_trip_with_an_agent_that_asks(alice, sessions, make_settings, run_worker):
    from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn

    asking = AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["ask_user"],
        script=[
            ScriptedTurn(
                tool_calls=[ScriptedToolCall(name="ask_user", arguments={"question": "Colour?"})]
            ),
            ScriptedTurn(content="You chose {last_user_message}."),
        ],
    )
    settings = make_settings(agent_types={"asking": asking})
    async with api_client(settings) as http:
        created = await start(http, alice, "asking")
        await run_worker(settings)
        parked = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
        assert parked["status"] == "awaiting_input"
        assert parked["metadata"]["question"] == "Colour?"
        early = await control(http, alice, created["id"], "resume")
        assert early.status_code == 409
        answered = await control(http, alice, created["id"], "input", answer="green")
        assert answered.json() == {"status": "pending", "signal": "input", "accepted": True}
        again = await control(http, alice, created["id"], "input", answer="blue")
        assert again.status_code == 409
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert done["status"] == "completed"
    assert done["output"] == {"response": "You chose green."}
    assert "question" not in done["metadata"]
    async with sessions() as session:
        from app.executions.models import ExecutionMessage

        messages = list(
            await session.scalars(
                select(ExecutionMessage.message)
                .where(ExecutionMessage.execution_id == uuid.UUID(created["id"]))
                .order_by(ExecutionMessage.seq)
            )
        )
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
    ]
    assert messages[4]["content"] == "green"
    async with sessions() as session:
        answers = list(
            await session.scalars(
                select(ExecutionSignal).where(
                    ExecutionSignal.execution_id == uuid.UUID(created["id"]),
                    ExecutionSignal.signal_type == "input",
                )
            )
        )
    assert [(s.payload, s.processed) for s in answers] == [({"answer": "green"}, True)]


async def test_cancel_kills_the_bash_command_in_flight(
    alice, sessions, make_settings, run_worker, settings
):
    import psutil

    from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn

    marker = "sleep 30.125"  # in the sandbox's PID namespace: found by its command line
    command = f"{marker} & touch started; wait"
    spec = AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["bash"],
        script=[
            ScriptedTurn(
                tool_calls=[ScriptedToolCall(name="bash", arguments={"command": command})]
            ),
            ScriptedTurn(content="never"),
        ],
    )

    def sleeping() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline", "status"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if marker in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        return found

    own = make_settings(agent_types={"shell": spec})
    async with api_client(own) as http:
        created = await start(http, alice, "shell")
        worker = asyncio.create_task(run_worker(own))
        started = own.workspace_base / created["id"] / "started"

        async def running() -> bool:
            return started.exists()

        await wait_for(running)
        assert sleeping()
        await control(http, alice, created["id"], "cancel")
        await asyncio.wait_for(worker, 5)

    for _ in range(200):
        if not sleeping():
            break
        await asyncio.sleep(0.01)
    assert not sleeping(), "the command's process survived the cancel"
    assert (await load(sessions, created["id"])).status == "cancelled"
