"""The worker process's one heartbeat for all the executions it holds."""

from __future__ import annotations

import functools
import uuid

from sqlalchemy import text

from app.config import WorkerTuning
from app.db import create_engine
from app.executions.heartbeat import Heartbeat
from tests.fixtures.executions import load, start


async def test_one_beat_refreshes_every_held_execution_and_stops_the_ones_taken_away(
    client, alice, db, sessions
):
    ids = [uuid.UUID((await start(client, alice, "steps-3"))["id"]) for _ in range(3)]
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE agent_executions SET status = 'running', lease = 1, "
                "heartbeat_at = now() - interval '1 hour' WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
    stopped: list[uuid.UUID] = []
    engine = db.execution_options(isolation_level="AUTOCOMMIT")
    heartbeat = Heartbeat(engine.connect, WorkerTuning(heartbeat_interval=1, stale_after=10))
    for execution_id in ids:
        # The last one is held under a lease it no longer has (killed, or handed on).
        lease = 0 if execution_id == ids[-1] else 1
        heartbeat.hold(execution_id, lease, functools.partial(stopped.append, execution_id))

    await heartbeat.beat()

    assert stopped == [ids[-1]]
    assert heartbeat.held == 2
    for execution_id in ids:
        execution = await load(sessions, str(execution_id))
        assert execution.heartbeat_at is not None
        refreshed = execution.heartbeat_at.timestamp() > execution.created_at.timestamp()
        assert refreshed is (execution_id != ids[-1])


async def test_a_heartbeat_that_cannot_get_through_stops_what_the_sweep_may_take(monkeypatch):
    """After ``stale_after`` minus two intervals without a heartbeat, executions are stopped
    before the sweep can hand them to another worker; one claimed since is not."""
    now = [1000.0]
    monkeypatch.setattr("app.executions.heartbeat.time.monotonic", lambda: now[0])
    unreachable = create_engine("postgresql://postgres@127.0.0.1:9/none", pre_ping=False)
    heartbeat = Heartbeat(unreachable.connect, WorkerTuning(heartbeat_interval=1, stale_after=10))
    stopped: list[str] = []
    heartbeat.hold(uuid.uuid4(), 1, lambda: stopped.append("old"))
    now[0] += 7
    await heartbeat.beat()
    assert stopped == []  # 7 s: not yet
    now[0] += 1
    heartbeat.hold(uuid.uuid4(), 1, lambda: stopped.append("just claimed"))

    await heartbeat.beat()

    assert stopped == ["old"]
    assert heartbeat.held == 1
    await unreachable.dispose()
