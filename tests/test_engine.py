from __future__ import annotations

import uuid
from typing import Any

from arq.constants import job_key_prefix
from sqlalchemy import select, text

from app.config import Limits
from app.executions.engine import run_execution
from app.executions.events import decode_message
from app.executions.jobs import job_id
from app.executions.models import ExecutionLog, ExecutionMessage, ExecutionSignal
from app.executions.transitions import COMPLETE
from tests.conftest import scripted_type
from tests.fixtures.api import api_client, run_to_end
from tests.fixtures.executions import load, start, step_numbers
from workers.context import close_context, open_context


async def test_demo_agent_completes_with_what_it_read(
    client, alice, run_worker, sessions, settings
):
    created = await start(client, alice, "demo", "hello world")
    assert created["status"] == "pending"

    await run_worker()

    body = (await client.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert body["status"] == "completed"
    assert body["output"] == {"response": "The note in my workspace says: hello world"}
    assert body["step_count"] == 3
    note = settings.workspace_base / created["id"] / "note.txt"
    assert note.read_text() == "hello world"
    async with sessions() as session:
        steps = await session.scalars(
            select(ExecutionLog).where(ExecutionLog.event_type == "step_completed")
        )
        assert len(list(steps)) == body["step_count"]
        messages = list(
            await session.scalars(
                select(ExecutionMessage)
                .where(ExecutionMessage.execution_id == uuid.UUID(created["id"]))
                .order_by(ExecutionMessage.seq)
            )
        )
    assert [m.seq for m in messages] == list(range(len(messages)))
    roles = [m.message["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert messages[-1].message["content"].endswith("hello world")


async def test_multi_chunk_execution_completes_without_losing_or_repeating_steps(
    client, alice, run_worker, sessions, settings
):
    assert settings.limits.chunk_size == 10
    created = await start(client, alice, "steps-25")
    await run_worker()
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.step_count == 25
    assert execution.chunk_count == 3
    assert execution.lease == 3
    assert await step_numbers(sessions, created["id"]) == list(range(1, 26))
    async with sessions() as session:
        seqs = list(
            await session.scalars(
                select(ExecutionMessage.seq)
                .where(ExecutionMessage.execution_id == execution.id)
                .order_by(ExecutionMessage.seq)
            )
        )
    # system + user + 24 x (assistant + tool) + final assistant
    assert seqs == list(range(2 + 24 * 2 + 1))


async def test_duplicate_enqueue_runs_nothing_twice(client, alice, run_worker, sessions, redis):
    from app.executions.jobs import RUN_EXECUTION, enqueue_chunk

    created = await start(client, alice, "steps-3")
    # Same job id: arq refuses it. Different job id, same lease: the claim refuses it.
    assert await enqueue_chunk(redis, created["id"], 0, "agents-default") is False
    await redis.enqueue_job(
        RUN_EXECUTION, created["id"], 0, _job_id="dup", _queue_name="agents-default"
    )
    await run_worker()
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.lease == 1
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3]
    await redis.enqueue_job(
        RUN_EXECUTION, created["id"], 0, _job_id="late", _queue_name="agents-default"
    )
    await run_worker()
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3]


async def test_stale_lease_write_is_rejected(db, alice, sessions, client):
    from app.executions import worker_repository

    created = await start(client, alice, "steps-3")
    execution_id = uuid.UUID(created["id"])
    autocommit = db.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        first = await worker_repository.claim_execution(conn, execution_id, 0, "worker-a")
        assert first is not None
        assert first.lease == 1
        # A second claim with the old lease loses; a recovery claim with the current one wins.
        assert await worker_repository.claim_execution(conn, execution_id, 0, "worker-b") is None
        second = await worker_repository.claim_execution(conn, execution_id, 1, "worker-b")
        assert second is not None
        assert second.lease == 2
        written = await worker_repository.commit_step(
            conn,
            worker_repository.StepCommit(
                execution_id=execution_id,
                lease=first.lease,
                step_count=1,
                usage={"input_tokens": 1, "output_tokens": 1},
                snapshot={},
                first_seq=0,
                messages=[{"role": "system", "content": "x"}],
                log_context={"step_number": 1},
                finish=COMPLETE,
                output={"response": "stale"},
            ),
        )
        assert written is None
        stale = await worker_repository.record_heartbeats(conn, {execution_id: first.lease})
        current = await worker_repository.record_heartbeats(conn, {execution_id: second.lease})
        assert stale == set()
        assert current == {execution_id}
    execution = await load(sessions, created["id"])
    assert execution.status == "running"
    assert execution.step_count == 0
    assert execution.output is None
    assert execution.worker_id == "worker-b"
    assert await step_numbers(sessions, created["id"]) == []


async def test_worker_whose_lease_is_superseded_stops_writing(
    client, alice, run_worker, sessions, db
):
    import asyncio

    created = await start(client, alice, "slow-3")
    worker = asyncio.create_task(run_worker())
    for _ in range(200):
        if await step_numbers(sessions, created["id"]) == [1]:
            break
        await asyncio.sleep(0.02)
    # Another party takes the execution over (as a force kill or a recovery would).
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_executions SET lease = lease + 1 WHERE id = :id"),
            {"id": uuid.UUID(created["id"])},
        )
    await worker
    execution = await load(sessions, created["id"])
    assert execution.status == "running"
    assert execution.step_count == 1
    assert await step_numbers(sessions, created["id"]) == [1]


async def test_model_error_fails_the_execution_without_a_traceback(
    client, alice, run_worker, make_settings
):
    from tests.conftest import scripted_type

    broken = scripted_type(3)
    broken.script = broken.script[:1]  # runs out after one step
    settings = make_settings(agent_types={"broken": broken})
    body = await run_to_end(settings, alice.headers, "broken", run_worker)
    assert body["status"] == "failed"
    assert body["error"]["type"] == "script_exhausted"
    assert "Traceback" not in str(body)
    assert body["step_count"] == 1
    assert body["completed_at"] is not None


async def test_step_limit_fails_with_error_naming_the_limit(
    client, alice, run_worker, make_settings
):
    from tests.conftest import scripted_type

    settings = make_settings(agent_types={"capped": scripted_type(10, max_steps=4)})
    body = await run_to_end(settings, alice.headers, "capped", run_worker)
    assert body["status"] == "failed"
    assert body["error"]["type"] == "max_steps_exceeded"
    assert body["step_count"] == 4


async def read_events(pubsub: Any, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` events from ``pubsub`` (about 5 s at most); then it is closed."""
    received: list[dict[str, Any]] = []
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            received.extend(decode_message(message["data"]))
        if len(received) == count:
            break
    await pubsub.aclose()
    return received


async def test_events_are_published_after_each_commit(client, alice, run_worker, redis):
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"user.{alice.user.id}.agents")
    created = await start(client, alice, "steps-3")
    await run_worker()
    received = await read_events(pubsub, 6)
    names = [
        (m["event"], m["data"].get("status") or m["data"].get("step_number")) for m in received
    ]
    assert names == [
        ("status.changed", "pending"),
        ("status.changed", "running"),
        ("step.completed", 1),
        ("step.completed", 2),
        ("step.completed", 3),
        ("status.changed", "completed"),
    ]
    ids = [m["id"] for m in received]
    assert ids == sorted(ids)
    assert all(m["data"]["execution_id"] == created["id"] for m in received)
    step = received[2]["data"]
    assert {
        "step_number",
        "step_type",
        "has_tool_calls",
        "tool_names",
        "tokens_used",
        "token_usage",
        "timestamp",
    } <= set(step)


async def test_a_failed_tool_call_is_logged_before_its_step(
    alice, run_worker, sessions, redis, make_settings
):
    from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn

    spec = AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["files"],
        script=[
            ScriptedTurn(
                tool_calls=[ScriptedToolCall(name="read_file", arguments={"path": "missing.txt"})],
                input_tokens=10,
                output_tokens=5,
            ),
            ScriptedTurn(content="{last_tool_result}", input_tokens=20, output_tokens=7),
        ],
    )
    settings = make_settings(agent_types={"reader": spec})
    async with api_client(settings) as http:
        created = await start(http, alice, "reader")
        pubsub = redis.pubsub()
        await pubsub.subscribe(f"agent.{created['id']}")
        await run_worker(settings)
        body = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    received = await read_events(pubsub, 6)
    assert body["status"] == "completed"
    assert body["output"] == {"response": "error: no such file: missing.txt"}

    async with sessions() as session:
        logs = list(
            await session.scalars(
                select(ExecutionLog)
                .where(ExecutionLog.execution_id == uuid.UUID(created["id"]))
                .order_by(ExecutionLog.id)
            )
        )
    assert [(e.event_type, e.level) for e in logs] == [
        ("status_changed", "info"),
        ("status_changed", "info"),
        ("tool_called", "info"),
        ("tool_completed", "warning"),
        ("step_completed", "info"),
        ("step_completed", "info"),
        ("completed", "info"),
    ]
    called, completed, step = logs[2:5]
    assert called.context == {
        "tool": "read_file",
        "tool_call_id": "call_0_0",
        "arguments": '{"path": "missing.txt"}',
    }
    assert completed.context["duration_ms"] >= 0
    assert {k: v for k, v in completed.context.items() if k != "duration_ms"} == {
        "tool": "read_file",
        "tool_call_id": "call_0_0",
        "outcome": "error",
        "result": "error: no such file: missing.txt",
    }
    assert completed.message.startswith("Tool read_file failed in ")
    assert step.message == "Step 1 completed"
    assert step.context["tool_names"] == ["read_file"]

    # Live: the tool rows as log events, then the step with its own and the cumulative tokens.
    assert [(m["event"], m["id"]) for m in received] == [
        ("status.changed", logs[1].id),
        ("log", called.id),
        ("log", completed.id),
        ("step.completed", step.id),
        ("step.completed", logs[5].id),
        ("status.changed", logs[6].id),
    ]
    assert received[2]["data"]["level"] == "warning"
    assert received[2]["data"]["context"]["outcome"] == "error"
    steps = [m["data"] for m in received if m["event"] == "step.completed"]
    assert [(s["step_number"], s["tokens_used"], s["token_usage"]) for s in steps] == [
        (1, 15, 15),
        (2, 27, 42),
    ]


async def test_sweep_recovers_an_execution_whose_worker_died(
    client, alice, run_worker, sessions, db, redis, settings
):
    from app.executions import worker_repository
    from app.executions.recovery import sweep

    created = await start(client, alice, "steps-3")
    execution_id = uuid.UUID(created["id"])
    await redis.flushdb()  # the queued job is lost with Redis
    autocommit = db.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as conn:
        # A worker claimed it, then died before its first step.
        assert await worker_repository.claim_execution(conn, execution_id, 0, "dead-worker")
        await conn.execute(
            text(
                "UPDATE agent_executions SET heartbeat_at = now() - interval '1 hour' "
                "WHERE id = :id"
            ),
            {"id": execution_id},
        )
    report = await sweep(db, redis, settings)
    assert report.recovered == 1
    await run_worker()
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.recovery_count == 1
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3]


async def test_sweep_requeues_a_pending_execution_whose_job_redis_lost(
    client, alice, run_worker, sessions, db, redis, settings
):
    from app.executions.recovery import sweep

    created = await start(client, alice, "steps-3")
    await redis.flushdb()
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_executions SET updated_at = now() - interval '1 hour'")
        )
    assert (await sweep(db, redis, settings)).requeued == 1
    await run_worker()
    assert (await load(sessions, created["id"])).status == "completed"


async def test_nul_characters_from_a_model_are_stored_not_fatal(alice, run_worker, make_settings):
    from app.agents.spec import AgentTypeSpec, ScriptedTurn

    spec = AgentTypeSpec(
        provider="scripted", api_key_env=None, script=[ScriptedTurn(content="bad\x00byte")]
    )
    settings = make_settings(agent_types={"nul": spec})
    body = await run_to_end(settings, alice.headers, "nul", run_worker, "a\x00b")
    assert body["status"] == "completed"
    assert body["output"] == {"response": "bad\ufffdbyte"}


async def test_start_enqueues_a_job_arq_recognises(client, alice, redis):
    from arq.jobs import Job, JobStatus

    from app.executions.jobs import RUN_EXECUTION, job_id

    created = await start(client, alice, "steps-3")
    job = Job(
        job_id(created["id"], 0),
        redis,
        _queue_name="agents-default",
        _deserializer=redis.job_deserializer,
    )
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None
    assert info.function == RUN_EXECUTION
    assert tuple(info.args) == (created["id"], 0)


async def test_pause_between_chunks_parks_at_the_next_claim_without_running_a_step(
    client, alice, run_worker, sessions, redis, settings
):
    created = await start(client, alice, "steps-25")
    execution_id = created["id"]
    chunk = settings.limits.chunk_size
    # A worker runs the first chunk by hand: it commits `chunk` steps, enqueues the next chunk
    # under its lease and returns, leaving the execution running with no step in flight.
    await redis.delete(job_key_prefix + job_id(execution_id, 0), "agents-default")
    ctx = await open_context(settings)
    ctx["redis"] = redis
    try:
        assert await run_execution(ctx, execution_id, 0) == "ok"  # type: ignore[arg-type]
    finally:
        await close_context(ctx)
    between = await load(sessions, execution_id)
    assert (between.status, between.lease, between.step_count) == ("running", 1, chunk)
    assert await redis.exists(job_key_prefix + job_id(execution_id, 1))

    paused = await client.post(f"/api/agents/{execution_id}/pause", headers=alice.headers)
    assert paused.status_code == 202, paused.text
    assert paused.json() == {"status": "running", "signal": "pause", "accepted": True}
    await run_worker()  # claims the queued chunk

    body = (await client.get(f"/api/agents/{execution_id}", headers=alice.headers)).json()
    assert body["status"] == "paused"
    assert body["paused_at"] is not None
    # Parked by the claim itself: a step run first would have parked it one step later.
    assert body["step_count"] == chunk
    assert await step_numbers(sessions, execution_id) == list(range(1, chunk + 1))
    async with sessions() as session:
        signals = list(
            await session.scalars(
                select(ExecutionSignal).where(ExecutionSignal.execution_id == between.id)
            )
        )
        parked = list(
            await session.scalars(
                select(ExecutionLog).where(
                    ExecutionLog.execution_id == between.id, ExecutionLog.event_type == "paused"
                )
            )
        )
    assert [(s.signal_type, s.processed) for s in signals] == [("pause", True)]
    assert signals[0].processed_at is not None
    assert [(e.context["from"], e.context["to"], e.context["step_count"]) for e in parked] == [
        ("running", "paused", chunk)
    ]

    resumed = await client.post(f"/api/agents/{execution_id}/resume", headers=alice.headers)
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "pending"
    await run_worker()
    assert (await load(sessions, execution_id)).status == "completed"
    assert await step_numbers(sessions, execution_id) == list(range(1, 26))


async def test_execution_needing_more_chunks_than_max_chunks_fails_after_the_last_allowed_one(
    alice, run_worker, sessions, make_settings
):
    limits = Limits(chunk_size=2, max_chunks=2)
    allowed = limits.chunk_size * limits.max_chunks
    settings = make_settings(limits=limits, agent_types={"long": scripted_type(allowed + 3)})
    body = await run_to_end(settings, alice.headers, "long", run_worker)
    assert body["status"] == "failed"
    assert body["error"] == {
        "type": "max_chunks_exceeded",
        "message": f"stopped after {limits.max_chunks} chunks",
    }
    assert body["completed_at"] is not None
    assert body["step_count"] == allowed
    assert await step_numbers(sessions, body["id"]) == list(range(1, allowed + 1))
    async with sessions() as session:
        seqs = list(
            await session.scalars(
                select(ExecutionMessage.seq)
                .where(ExecutionMessage.execution_id == uuid.UUID(body["id"]))
                .order_by(ExecutionMessage.seq)
            )
        )
    # system + user + one assistant + tool pair per committed step, none twice
    assert seqs == list(range(2 + allowed * 2))


async def test_execution_of_an_agent_type_removed_from_configuration_fails_and_others_run(
    alice, run_worker, sessions, make_settings
):
    before = make_settings(agent_types={"retired": scripted_type(3)})
    after = make_settings()
    assert "retired" not in after.agent_types
    async with api_client(before) as http:
        orphan = await start(http, alice, "retired")
        other = await start(http, alice, "steps-3")
    await run_worker(after)  # workers restarted with the type gone from their configuration
    async with api_client(after) as http:
        orphan_body = (await http.get(f"/api/agents/{orphan['id']}", headers=alice.headers)).json()
        other_body = (await http.get(f"/api/agents/{other['id']}", headers=alice.headers)).json()
    assert orphan_body["status"] == "failed"
    assert orphan_body["error"]["type"] == "unknown_agent_type"
    assert "'retired'" in orphan_body["error"]["message"]
    assert "Traceback" not in orphan_body["error"]["message"]
    assert orphan_body["completed_at"] is not None
    assert orphan_body["step_count"] == 0
    assert await step_numbers(sessions, orphan["id"]) == []
    assert other_body["status"] == "completed"
    assert await step_numbers(sessions, other["id"]) == [1, 2, 3]
