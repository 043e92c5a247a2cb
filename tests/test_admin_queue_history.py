"""``GET /api/admin/queues/history``: per queue and minute, throughput and wait times from
PostgreSQL and the depth the sweep sampled into Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.admin.queues import DEPTH_KEEP_SECONDS, depth_key, record_depth_samples
from tests.fixtures.api import api_client
from tests.fixtures.queue_history import at, insert_execution, sample_depths
from tests.fixtures.users import Account, make_account
from workers.runner import WorkerGroup

ZERO = {"started": 0, "completed": 0, "failed": 0, "wait_seconds": {"mean": None, "p95": None}}


def by_minute(series: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A series' minutes by their ``at``, each without ``at``."""
    return {
        minute["at"]: {key: value for key, value in minute.items() if key != "at"}
        for minute in series["minutes"]
    }


def iso(unix: int) -> str:
    return at(unix).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def admin(sessions) -> Account:
    return await make_account(sessions, "ops@example.com", is_admin=True)


async def test_history_counts_and_waits_per_queue_and_minute(admin, alice, sessions, settings):
    # Two minutes well inside the last hour, so the minute turning during the test moves
    # nothing out of the window: the buckets are found by their time, not their position.
    now = int(time.time())
    a = now // 60 * 60 - 20 * 60
    b = now // 60 * 60 - 5 * 60
    user = alice.user.id
    rows: list[dict[str, Any]] = [
        # waits 10 s; completes in minute a
        {"created": a, "started": a + 10, "finished": a + 40},
        # waits 30 s; fails in minute b
        {"created": a, "started": a + 30, "finished": b + 10, "status": "failed"},
        # due at its run_at, not when created: waits 2 s; still running
        {"created": a - 600, "run_at": a + 20, "started": a + 22, "status": "running"},
        # started before the window, completed in it: a completion, no start
        {"created": now - 7200, "started": now - 7190, "finished": b + 20},
        # all of it long ago
        {"created": now - 9000, "started": now - 8990, "finished": now - 8900},
        # not started yet
        {"created": a, "run_at": now + 600, "status": "scheduled"},
        {"queue": "agents-long", "created": b, "started": b + 4, "finished": b + 50},
        # a start, then cancelled: neither completed nor failed
        {
            "queue": "agents-long", "created": b, "started": b + 6, "finished": b + 30,
            "status": "cancelled",
        },
        # a queue no setting names, as an old execution may have
        {"queue": "retired", "created": a, "started": a + 1, "finished": a + 2},
    ]  # fmt: skip
    for row in rows:
        await insert_execution(sessions, user, **row)

    async with api_client(settings) as http:
        response = await http.get("/api/admin/queues/history", headers=admin.headers)
        shorter = await http.get("/api/admin/queues/history?minutes=5", headers=admin.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["minutes"] == 60
    queues = {series["name"]: series for series in body["queues"]}
    assert list(queues) == [*settings.queue_names(), "retired"]
    for series in [*queues.values(), body["overall"]]:
        assert len(series["minutes"]) == 60
        starts = [minute["at"] for minute in series["minutes"]]
        assert starts == sorted(starts)
        assert starts[0] == body["since"]
    assert body["since"] in (iso(now // 60 * 60 - 59 * 60), iso(now // 60 * 60 - 58 * 60))

    default = by_minute(queues["agents-default"])
    assert default.pop(iso(a)) == {
        "depth": None, "started": 3, "completed": 1, "failed": 0,
        "wait_seconds": {"mean": 14.0, "p95": 28.0},  # of 10, 30 and 2 s
    }  # fmt: skip
    assert default.pop(iso(b)) == {**ZERO, "depth": None, "completed": 1, "failed": 1}
    assert all(minute == {**ZERO, "depth": None} for minute in default.values())

    long = by_minute(queues["agents-long"])
    assert long.pop(iso(b)) == {
        "depth": None, "started": 2, "completed": 1, "failed": 0,
        "wait_seconds": {"mean": 5.0, "p95": 5.9},  # of 4 and 6 s
    }  # fmt: skip
    assert all(minute == {**ZERO, "depth": None} for minute in long.values())
    assert by_minute(queues["retired"])[iso(a)]["started"] == 1
    assert all(m == {**ZERO, "depth": None} for m in by_minute(queues["agents-priority"]).values())

    overall = by_minute(body["overall"])
    assert overall[iso(a)] == {
        "depth": None, "started": 4, "completed": 2, "failed": 0,
        "wait_seconds": {"mean": 10.75, "p95": 27.0},  # of 10, 30, 2 and 1 s
    }  # fmt: skip
    assert overall[iso(b)] == {
        "depth": None, "started": 2, "completed": 2, "failed": 1,
        "wait_seconds": {"mean": 5.0, "p95": 5.9},
    }  # fmt: skip

    assert shorter.status_code == 200
    short = shorter.json()
    assert short["minutes"] == 5
    assert all(len(series["minutes"]) == 5 for series in short["queues"])
    assert sum(minute["completed"] for minute in short["overall"]["minutes"]) == 0


async def test_history_is_for_admins_with_a_bounded_window(admin, alice, client):
    anonymous = await client.get("/api/admin/queues/history")
    refused = await client.get("/api/admin/queues/history", headers=alice.headers)
    assert anonymous.status_code == 401
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    for minutes in ("4", "121", "sixty", "-1"):
        bad = await client.get(
            f"/api/admin/queues/history?minutes={minutes}", headers=admin.headers
        )
        assert bad.status_code == 422, minutes
        assert bad.headers["content-type"] == "application/problem+json"
        problem = bad.json()
        assert problem["type"] == "/problems/validation-error"
        assert problem["errors"][0]["loc"] == ["query", "minutes"]
    for minutes in ("5", "120"):
        good = await client.get(
            f"/api/admin/queues/history?minutes={minutes}", headers=admin.headers
        )
        assert good.status_code == 200
        assert len(good.json()["overall"]["minutes"]) == int(minutes)

    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/admin/queues/history"]["get"]
    assert operation["operationId"] == "adminQueueHistory"
    assert {"200", "401", "403", "422"} <= set(operation["responses"])


async def test_sampled_depth_per_minute_is_the_highest_sample(admin, client, redis):
    now = time.time()
    a = int(now) // 60 * 60 - 10 * 60
    b = int(now) // 60 * 60 - 3 * 60
    await sample_depths(redis, {"agents-default": 3, "agents-long": 1}, a + 5)
    await sample_depths(redis, {"agents-default": 5, "agents-long": 0}, a + 35)
    await sample_depths(redis, {"agents-default": 1, "agents-long": 0}, b + 1)
    # A job deferred to later is not due: not in the depth.
    await redis.zadd("agents-default", {"deferred-job": (now + 3600) * 1000})
    await record_depth_samples(redis, ["agents-default"], at=b + 2)

    body = (await client.get("/api/admin/queues/history", headers=admin.headers)).json()
    queues = {series["name"]: by_minute(series) for series in body["queues"]}
    depths = {
        name: {minute: m["depth"] for minute, m in series.items() if m["depth"] is not None}
        for name, series in queues.items()
    }
    assert depths == {
        "agents-default": {iso(a): 5, iso(b): 1},
        "agents-long": {iso(a): 1, iso(b): 0},
        "agents-priority": {},
    }
    overall = {m["at"]: m["depth"] for m in body["overall"]["minutes"] if m["depth"] is not None}
    assert overall == {iso(a): 6, iso(b): 1}


async def test_depth_samples_are_trimmed_to_the_window(redis):
    now = time.time()
    key = depth_key("agents-default")
    await record_depth_samples(redis, ["agents-default"], at=now - DEPTH_KEEP_SECONDS - 60)
    await record_depth_samples(redis, ["agents-default"], at=now - 60)
    assert await redis.zcard(key) == 2  # trimming is relative to the newest sample
    await record_depth_samples(redis, ["agents-default"], at=now)
    assert [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)] == [
        f"{int((now - 60) * 1000)}:0".encode(),
        f"{int(now * 1000)}:0".encode(),
    ]
    assert 0 < await redis.ttl(key) <= DEPTH_KEEP_SECONDS


async def test_the_workers_sweep_samples_every_queue(admin, client, redis, settings):
    # A due job on a queue no worker of this group serves: it stays, and is sampled.
    await redis.zadd("agents-priority", {"waiting-job": 0})
    group = WorkerGroup(settings, ["agents-default"])
    running = asyncio.create_task(group.run(handle_signals=False))
    try:
        for _ in range(100):
            body = (await client.get("/api/admin/queues/history", headers=admin.headers)).json()
            queues = {series["name"]: series for series in body["queues"]}
            sampled = [m["depth"] for m in queues["agents-priority"]["minutes"][-2:]]
            if 1 in sampled:
                break
            await asyncio.sleep(0.05)
    finally:
        group.stop()
        await asyncio.wait_for(running, 10)
    assert 1 in sampled
    # The sweep's own job, running in agents-default, is not waiting.
    assert 0 in [m["depth"] for m in queues["agents-default"]["minutes"][-2:]]
