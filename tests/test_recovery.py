"""The sweep and the engine under Redis trouble: work is delayed, never lost or failed."""

from __future__ import annotations

import asyncio
import uuid

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import session_factory
from app.executions import worker_repository
from app.executions.engine import run_execution
from app.executions.events import decode_message
from app.executions.jobs import job_id
from app.executions.recovery import sweep
from tests.fixtures.executions import load, start, step_numbers
from workers.context import close_context, open_context

STALE = text("UPDATE agent_executions SET heartbeat_at = now() - interval '1 hour' WHERE id = :id")


async def claimed_by_a_dead_worker(client, account, db, redis, agent_type="steps-3") -> uuid.UUID:
    """An execution a worker claimed and then died with: running, stale, no job queued."""
    created = await start(client, account, agent_type)
    execution_id = uuid.UUID(created["id"])
    await redis.delete(job_key_prefix + job_id(execution_id, 0))
    await redis.delete("agents-default")
    async with db.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        assert await worker_repository.claim_execution(conn, execution_id, 0, "dead")
        await conn.execute(STALE, {"id": execution_id})
    return execution_id


async def test_redis_failure_at_a_chunk_boundary_delays_but_does_not_fail(
    client, alice, db, redis, sessions, settings, run_worker
):
    created = await start(client, alice, "steps-25")
    execution_id = uuid.UUID(created["id"])
    ctx = await open_context(settings)
    # A real client for a Redis nobody listens on: publishing and enqueueing both fail.
    ctx["redis"] = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        assert await run_execution(ctx, created["id"], 0) == "ok"  # type: ignore[arg-type]
    finally:
        await close_context(ctx)
    execution = await load(sessions, created["id"])
    assert (execution.status, execution.step_count) == ("running", 10)
    async with db.begin() as conn:
        await conn.execute(STALE, {"id": execution_id})
    await redis.delete("agents-default")  # the first job was run by hand above
    assert (await sweep(db, redis, settings)).recovered == 1
    await run_worker()
    assert (await load(sessions, created["id"])).status == "completed"
    assert await step_numbers(sessions, created["id"]) == list(range(1, 26))


async def test_repeated_sweeps_wait_for_a_queued_recovery_job(client, alice, db, redis, settings):
    execution_id = await claimed_by_a_dead_worker(client, alice, db, redis)
    assert (await sweep(db, redis, settings)).recovered == 1
    for _ in range(settings.worker.max_recoveries + 2):
        async with db.begin() as conn:
            await conn.execute(STALE, {"id": execution_id})
        report = await sweep(db, redis, settings)
        assert (report.recovered, report.failed) == (0, 0)
    execution = await load(db_sessions(db), str(execution_id))
    assert (execution.status, execution.recovery_count) == ("running", 1)


async def test_concurrent_sweeps_recover_once(client, alice, db, redis, settings, run_worker):
    execution_id = await claimed_by_a_dead_worker(client, alice, db, redis)
    reports = await asyncio.gather(*(sweep(db, redis, settings) for _ in range(4)))
    assert sum(r.recovered for r in reports) == 1
    assert sum(r.failed for r in reports) == 0
    await run_worker()
    execution = await load(db_sessions(db), str(execution_id))
    assert (execution.status, execution.recovery_count) == ("completed", 1)


async def test_sweep_gives_up_after_max_recoveries_and_says_so(client, alice, db, redis, settings):
    execution_id = await claimed_by_a_dead_worker(client, alice, db, redis)
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_executions SET recovery_count = :n WHERE id = :id"),
            {"n": settings.worker.max_recoveries, "id": execution_id},
        )
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"agent.{execution_id}")
    assert (await sweep(db, redis, settings)).failed == 1
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message:
            break
    await pubsub.aclose()
    assert message is not None
    [event] = decode_message(message["data"])
    assert (event["event"], event["data"]["status"]) == ("status.changed", "failed")
    execution = await load(db_sessions(db), str(execution_id))
    assert execution.status == "failed"
    assert execution.error == {
        "type": "worker_lost",
        "message": "the workers running it stopped responding",
    }
    assert (await sweep(db, redis, settings)).failed == 0


async def test_pending_execution_whose_first_job_failed_is_requeued(
    client, alice, db, redis, settings, run_worker
):
    created = await start(client, alice, "steps-3")
    first_job = job_id(created["id"], 0)
    # As arq leaves a job that raised: no job, no queue entry, a kept result under its id.
    await redis.delete(job_key_prefix + first_job, "agents-default")
    await redis.set(result_key_prefix + first_job, b"failed", ex=3600)
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_executions SET updated_at = now() - interval '1 hour'")
        )
    reports = await asyncio.gather(*(sweep(db, redis, settings) for _ in range(3)))
    assert sum(r.requeued for r in reports) == 1
    await run_worker()
    assert (await load(db_sessions(db), created["id"])).status == "completed"


def db_sessions(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db)


async def test_heartbeat_after_the_final_step_is_not_a_lost_lease(
    client, alice, db, run_worker, sessions
):
    created = await start(client, alice, "steps-3")
    await run_worker()
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    async with db.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        ours = await worker_repository.record_heartbeats(conn, {execution.id: execution.lease})
        stale = await worker_repository.record_heartbeats(conn, {execution.id: execution.lease - 1})
        assert ours == {execution.id}
        assert stale == set()
    assert (await load(sessions, created["id"])).heartbeat_at == execution.heartbeat_at


async def test_a_database_restart_mid_step_does_not_fail_the_execution(
    alice, db, sessions, make_settings, run_worker
):
    from tests.conftest import scripted_type
    from tests.fixtures.api import api_client

    settings = make_settings(agent_types={"slow": scripted_type(4, delay=0.3)})
    async with api_client(settings) as http:
        created = await start(http, alice, "slow")
    worker = asyncio.create_task(run_worker(settings))
    for _ in range(300):
        if (await load(sessions, created["id"])).step_count >= 1:
            break
        await asyncio.sleep(0.01)
    # Every other connection to the database is cut, as a restart would (the worker's included,
    # with a step in flight): its next statement fails on a dead connection.
    async with db.connect() as conn:
        cut = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert cut is not None
    assert cut >= 1
    await worker
    await asyncio.sleep(1.2)  # the retry waits a moment for the database to come back
    await run_worker(settings)
    execution = await load(sessions, created["id"])
    assert (execution.status, execution.error) == ("completed", None)
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3, 4]


async def test_a_worker_whose_heartbeats_do_not_get_through_stops_before_the_sweep(
    alice, db, sessions, redis, make_settings, run_worker
):
    import time

    from tests.conftest import scripted_type
    from tests.fixtures.api import api_client

    settings = make_settings(
        agent_types={"slow": scripted_type(1, delay=2.5)},
        worker={"heartbeat_interval": 0.2, "stale_after": 1.0},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "slow")
    worker = asyncio.create_task(run_worker(settings))
    for _ in range(300):
        if (await load(sessions, created["id"])).status == "running":
            break
        await asyncio.sleep(0.01)
    # Its heartbeats block on the row (as they would with the database out of reach).
    async with db.begin() as conn:
        await conn.execute(
            text("SELECT 1 FROM agent_executions WHERE id = :id FOR UPDATE"),
            {"id": uuid.UUID(created["id"])},
        )
        blocked = time.monotonic()
        await asyncio.wait_for(worker, 5)
        stopped_after = time.monotonic() - blocked
    # It stopped its 2.5 s step before the sweep could take the execution (1 s), and wrote
    # nothing: the step runs again, once, under the worker the sweep hands it to.
    assert stopped_after < 1.0
    execution = await load(sessions, created["id"])
    assert (execution.status, execution.step_count) == ("running", 0)
    await asyncio.sleep(1.1)
    assert (await sweep(db, redis, settings)).recovered == 1
    await run_worker(settings)
    assert (await load(sessions, created["id"])).status == "completed"
    assert await step_numbers(sessions, created["id"]) == [1]


async def test_a_healthy_worker_is_not_fenced_when_staleness_is_close_to_the_heartbeat(
    alice, sessions, make_settings, run_worker
):
    from tests.conftest import scripted_type
    from tests.fixtures.api import api_client

    settings = make_settings(
        agent_types={"slow": scripted_type(1, delay=1.2)},
        worker={"heartbeat_interval": 0.3, "stale_after": 0.5},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "slow")
    await run_worker(settings)
    assert (await load(sessions, created["id"])).status == "completed"
