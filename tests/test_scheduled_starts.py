"""Executions scheduled to start later: on time by their timer job, by the sweep when Redis
lost it, exactly once, and steerable while they wait for their time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from app.config import TierLimits
from app.executions.recovery import start_scheduled, sweep
from tests.fixtures.api import api_client
from tests.fixtures.executions import load
from tests.fixtures.users import make_account


async def schedule(http, account, agent_type: str = "steps-3", **when):
    return await http.post(
        "/api/agents",
        json={"agent_type": agent_type, "input": {"prompt": "later"}, **when},
        headers=account.headers,
    )


async def test_a_scheduled_execution_starts_on_time(alice, sessions, settings, run_worker):
    async with api_client(settings) as http:
        response = await schedule(http, alice, delay_seconds=0.5)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["status"] == "scheduled"
        run_at = datetime.fromisoformat(created["run_at"])
        await run_worker()  # nothing is due yet
        assert (await load(sessions, created["id"])).status == "scheduled"
        await asyncio.sleep(max(0.0, (run_at - datetime.now(UTC)).total_seconds()))
        await run_worker()
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.started_at is not None
    assert timedelta(0) <= execution.started_at - run_at < timedelta(seconds=1)


async def test_a_scheduled_start_survives_losing_redis(
    alice, sessions, settings, db, redis, run_worker
):
    async with api_client(settings) as http:
        created = (await schedule(http, alice, delay_seconds=0.2)).json()
    await redis.flushdb()  # its timer job is gone
    await asyncio.sleep(0.3)
    report = await sweep(db, redis, settings)
    assert report.started == 1
    await run_worker()
    assert (await load(sessions, created["id"])).status == "completed"


async def test_the_timer_and_the_sweep_start_it_exactly_once(alice, sessions, settings, db, redis):
    async with api_client(settings) as http:
        created = (await schedule(http, alice, delay_seconds=0.1)).json()
    await asyncio.sleep(0.2)
    execution_id = uuid.UUID(created["id"])
    started = await asyncio.gather(
        *(start_scheduled(db, redis, settings, execution_id) for _ in range(4))
    )
    assert sorted(started) == [False, False, False, True]
    assert (await load(sessions, created["id"])).status == "pending"


async def test_when_to_start_is_checked(alice, sessions, settings, client, db):
    now = datetime.now(UTC)
    refused: list[dict] = [
        {"run_at": (now + timedelta(days=31)).isoformat()},  # past the 30-day horizon
        {"run_at": "2030-01-01T09:00:00"},  # no offset
        {"run_at": (now + timedelta(hours=1)).isoformat(), "delay_seconds": 5},
        {"delay_seconds": 0},
        {"delay_seconds": 5, "await_event": {"event_type": "ci.finished"}},
    ]
    for when in refused:
        response = await schedule(client, alice, **when)
        assert response.status_code == 422, (when, response.text)
    assert (await client.get("/api/agents", headers=alice.headers)).json()["total"] == 0
    past = await schedule(client, alice, run_at=(now - timedelta(minutes=5)).isoformat())
    assert past.json()["status"] == "pending"  # due already: it starts now
    assert past.json()["run_at"] is None


async def test_pause_keeps_the_start_time_and_resume_waits_for_it_or_starts_at_once(
    alice, sessions, settings, run_worker
):
    async with api_client(settings) as http:
        later = (await schedule(http, alice, delay_seconds=3600)).json()
        soon = (await schedule(http, alice, delay_seconds=0.2)).json()
        for created in (later, soon):
            paused = await http.post(f"/api/agents/{created['id']}/pause", headers=alice.headers)
            assert paused.json()["status"] == "paused"
        await asyncio.sleep(0.3)
        await run_worker()  # the soon one's timer fires while it is paused: nothing happens
        assert (await load(sessions, soon["id"])).status == "paused"
        resumed_later = await http.post(f"/api/agents/{later['id']}/resume", headers=alice.headers)
        assert resumed_later.json()["status"] == "scheduled"
        assert (await load(sessions, later["id"])).run_at is not None
        resumed_soon = await http.post(f"/api/agents/{soon['id']}/resume", headers=alice.headers)
        assert resumed_soon.json()["status"] == "pending"  # its time has passed: it starts now
        await run_worker()
        cancelled = await http.post(f"/api/agents/{later['id']}/cancel", headers=alice.headers)
        assert cancelled.json()["status"] == "cancelled"
    assert (await load(sessions, soon["id"])).status == "completed"


async def test_scheduled_starts_count_per_hour_but_hold_no_concurrency_slot(
    sessions, make_settings
):
    settings = make_settings(tiers={"free": TierLimits(concurrent=1, per_hour=3)})
    free = await make_account(sessions, "free@example.com", tier="free")
    async with api_client(settings) as http:
        for _ in range(2):
            assert (await schedule(http, free, delay_seconds=3600)).status_code == 201
        now = await schedule(http, free)
        assert now.status_code == 201, now.text  # the two scheduled ones hold no slot
        over = await schedule(http, free, delay_seconds=3600)
    assert over.status_code == 429
    assert over.json()["limits"]["hourly"]["used"] == 3
