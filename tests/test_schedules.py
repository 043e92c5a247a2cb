"""Cron schedules: the clock across daylight-saving changes, the API, fires once per slot with
several workers, missed fires, skipped fires, and schedules kept in the configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from app.config import ScheduleConfig, TierLimits
from app.executions.jobs import enqueue_schedule_timer
from app.executions.models import Execution
from app.schedules.clock import check_cron, check_timezone, next_fire
from app.schedules.models import Schedule, ScheduleFire
from app.schedules.service import fire_due_schedules
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.users import make_account
from workers.runner import WorkerGroup


def fires(cron: str, zone: str, since: datetime, count: int) -> list[datetime]:
    out, at = [], since
    for _ in range(count):
        at = next_fire(cron, zone, at)
        out.append(at)
    return out


def test_a_daily_fire_in_the_skipped_spring_hour_happens_once_after_the_gap():
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29.
    days = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    assert days == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST: 02:30 does not exist
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]


def test_a_daily_fire_in_the_repeated_autumn_hour_happens_once():
    # Europe/Berlin repeats 02:00-03:00 on 2026-10-25.
    days = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 23, 12, tzinfo=UTC), 4)
    assert days == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    # Asked again from inside the repeated hour, it does not fire that day a second time.
    second_pass = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET, after the first 02:30
    assert next_fire("30 2 * * *", "Europe/Berlin", second_pass) == days[2]


def test_an_hourly_schedule_keeps_one_fire_per_hour_across_both_changes():
    spring = fires("0 * * * *", "America/New_York", datetime(2026, 3, 8, 5, tzinfo=UTC), 4)
    autumn = fires("0 * * * *", "America/New_York", datetime(2026, 11, 1, 4, tzinfo=UTC), 4)
    for run in (spring, autumn):
        gaps = {later - earlier for earlier, later in zip(run, run[1:], strict=False)}
        assert gaps == {timedelta(hours=1)}


@pytest.mark.parametrize("cron", ["* * * *", "* * * * * *", "61 * * * *", "@hourly", ""])
def test_only_five_field_cron_expressions_are_accepted(cron):
    with pytest.raises(ValueError, match="five-field"):
        check_cron(cron)


def test_time_zones_are_iana_names():
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Olympus", "CEST+2", "../etc/passwd"):
        with pytest.raises(ValueError, match="time zone"):
            check_timezone(bad)


def body(**overrides: object) -> dict:
    return {
        "name": "nightly audit",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "agent_type": "steps-3",
        "input": {"prompt": "audit the dependencies"},
        **overrides,
    }


async def test_schedules_through_the_api(client, alice, bob, sessions):
    created = await client.post("/api/schedules", json=body(), headers=alice.headers)
    assert created.status_code == 201, created.text
    schedule = created.json()
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert datetime.now(UTC) < next_run <= datetime.now(UTC) + timedelta(days=1)
    assert next_run.astimezone(UTC).minute == 0
    url = f"/api/schedules/{schedule['id']}"
    again = await client.post("/api/schedules", json=body(), headers=alice.headers)
    assert again.status_code == 409
    for bad in (body(cron="every day"), body(timezone="Nowhere/Else"), body(name="")):
        assert (
            await client.post("/api/schedules", json=bad, headers=alice.headers)
        ).status_code == 422
    unknown = await client.post(
        "/api/schedules", json=body(name="x", agent_type="nope"), headers=alice.headers
    )
    assert unknown.status_code == 422
    assert (await client.get(url, headers=bob.headers)).status_code == 404
    assert (await client.get("/api/schedules", headers=bob.headers)).json()["total"] == 0
    admin = await make_account(sessions, "root@example.com", is_admin=True)
    assert (await client.get("/api/schedules", headers=admin.headers)).json()["total"] == 1
    hourly = await client.patch(url, json={"cron": "15 * * * *"}, headers=alice.headers)
    assert hourly.status_code == 200, hourly.text
    assert datetime.fromisoformat(hourly.json()["next_run_at"]).minute == 15
    disabled = await client.patch(url, json={"enabled": False}, headers=alice.headers)
    assert disabled.json()["next_run_at"] is None
    assert (await client.delete(url, headers=bob.headers)).status_code == 404
    assert (await client.delete(url, headers=alice.headers)).status_code == 204
    assert (await client.get(url, headers=alice.headers)).status_code == 404


async def make_due(db, schedule_id: int, ago: timedelta) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE agent_schedules SET next_run_at = :at WHERE id = :id"),
            {"at": datetime.now(UTC) - ago, "id": schedule_id},
        )


async def test_a_due_schedule_fires_once_however_many_workers_try(
    client, alice, db, redis, settings, sessions, run_worker
):
    ids = []
    for n in range(3):
        created = await client.post(
            "/api/schedules", json=body(name=f"s{n}", cron="* * * * *"), headers=alice.headers
        )
        ids.append(created.json()["id"])
        await make_due(db, ids[-1], timedelta(seconds=1))
    # The timer job of one of them, and two sweeps, at once.
    await enqueue_schedule_timer(redis, ids[0], datetime.now(UTC), settings.queues.default)
    fired = await asyncio.gather(
        fire_due_schedules(db, redis, settings),
        fire_due_schedules(db, redis, settings),
        run_worker(),
    )
    assert fired[0] + fired[1] <= 3
    async with sessions() as session:
        executions = list(await session.scalars(select(Execution)))
        schedules = list(await session.scalars(select(Schedule).order_by(Schedule.id)))
    assert len(executions) == 3
    assert sorted(e.metadata_["schedule"]["id"] for e in executions) == sorted(ids)
    for schedule in schedules:
        assert schedule.last_execution_id is not None
        assert schedule.next_run_at is not None
        assert schedule.next_run_at > datetime.now(UTC)
    assert await fire_due_schedules(db, redis, settings) == 0


async def test_fires_missed_while_everything_was_down_fire_once(
    client, alice, db, redis, settings, sessions
):
    created = await client.post(
        "/api/schedules", json=body(cron="* * * * *"), headers=alice.headers
    )
    await make_due(db, created.json()["id"], timedelta(hours=3))  # 180 slots missed
    assert await fire_due_schedules(db, redis, settings) == 1
    async with sessions() as session:
        count = await session.scalar(select(ScheduleFire).with_only_columns(ScheduleFire.fire_time))
        executions = list(await session.scalars(select(Execution)))
    assert count is not None
    assert len(executions) == 1


async def test_a_fire_the_tier_refuses_is_recorded_as_skipped(sessions, make_settings, db, redis):
    settings = make_settings(tiers={"free": TierLimits(concurrent=1, per_hour=100)})
    free = await make_account(sessions, "free@example.com", tier="free")
    async with api_client(settings) as http:
        await start(http, free, "steps-3")  # holds the tier's only slot
        created = await http.post(
            "/api/schedules", json=body(cron="* * * * *"), headers=free.headers
        )
        schedule_id = created.json()["id"]
        await make_due(db, schedule_id, timedelta(seconds=1))
        assert await fire_due_schedules(db, redis, settings) == 1
        shown = (await http.get(f"/api/schedules/{schedule_id}", headers=free.headers)).json()
    assert "unfinished executions at once" in shown["last_skip"]["reason"]
    assert shown["last_execution_id"] is None
    async with sessions() as session:
        fire = await session.scalar(select(ScheduleFire))
    assert fire is not None
    assert fire.execution_id is None
    assert "unfinished executions at once" in (fire.skipped_reason or "")


async def test_configured_schedules_are_synchronised_when_workers_start(
    alice, sessions, make_settings
):
    config = ScheduleConfig(
        user="alice@example.com",
        cron="0 9 * * 1",
        timezone="Europe/Berlin",
        agent_type="steps-3",
        input={"prompt": "weekly report"},
    )
    with_it = make_settings(schedules={"weekly": config})
    await WorkerGroup(with_it, with_it.queue_names(), burst=True).run(handle_signals=False)
    async with sessions() as session:
        schedule = await session.scalar(select(Schedule))
    assert schedule is not None
    assert (schedule.name, schedule.from_config, schedule.cron) == ("weekly", True, "0 9 * * 1")
    assert schedule.next_run_at is not None
    assert schedule.next_run_at.astimezone(UTC).weekday() == 0
    without = make_settings()
    await WorkerGroup(without, without.queue_names(), burst=True).run(handle_signals=False)
    async with sessions() as session:
        assert await session.scalar(select(Schedule)) is None
