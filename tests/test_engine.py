from __future__ import annotations

import uuid

from sqlalchemy import select, text

from app.executions.models import Execution, ExecutionLog, ExecutionMessage
from tests.fixtures.api import run_to_end, start_execution


async def start(client, account, agent_type: str = "demo", prompt: str = "hello world") -> dict:
    return await start_execution(client, account.headers, agent_type, prompt)


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


async def step_numbers(sessions, execution_id: str) -> list[int]:
    async with sessions() as session:
        logs = await session.scalars(
            select(ExecutionLog)
            .where(
                ExecutionLog.execution_id == uuid.UUID(execution_id),
                ExecutionLog.event_type == "step_completed",
            )
            .order_by(ExecutionLog.id)
        )
        return [int(entry.message.split()[1]) for entry in logs]


async def load(sessions, execution_id: str) -> Execution:
    async with sessions() as session:
        execution = await session.get(Execution, uuid.UUID(execution_id))
        assert execution is not None
        return execution


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
            execution_id=execution_id,
            lease=first.lease,
            step_count=1,
            usage={"input_tokens": 1, "output_tokens": 1},
            snapshot={},
            first_seq=0,
            messages=[{"role": "system", "content": "x"}],
            log_message="Step 1 completed",
            log_context={},
            finish_status="completed",
            output={"response": "stale"},
        )
        assert written is None
        assert not await worker_repository.record_heartbeat(conn, execution_id, first.lease)
        assert await worker_repository.record_heartbeat(conn, execution_id, second.lease)
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


async def test_events_are_published_after_each_commit(client, alice, run_worker, redis):
    import json

    pubsub = redis.pubsub()
    await pubsub.subscribe(f"user.{alice.user.id}.agents")
    created = await start(client, alice, "steps-3")
    await run_worker()
    received = []
    for _ in range(50):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            received.append(json.loads(message["data"]))
        if len(received) == 6:
            break
    await pubsub.aclose()
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
        "timestamp",
    } <= set(step)


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
    job = Job(job_id(created["id"], 0), redis, _queue_name="agents-default")
    assert await job.status() == JobStatus.queued
    info = await job.info()
    assert info is not None
    assert info.function == RUN_EXECUTION
    assert info.args == (created["id"], 0)
