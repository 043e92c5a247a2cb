"""Executions that wait for events: the tool, starting already waiting, delivery over the API,
deadlines, pause and resume while waiting, and events nobody waited for."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.config import EventSettings
from app.events.models import Event
from app.executions.models import ExecutionLog, ExecutionSignal
from app.executions.recovery import sweep
from tests.fixtures.api import api_client
from tests.fixtures.executions import load, start
from tests.fixtures.users import Account, make_account


def waiting_type(**wait: object) -> AgentTypeSpec:
    """Waits for ``ci.finished`` (with ``wait``'s key and timeout), then answers with what the
    wait gave it."""
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["events"],
        script=[
            ScriptedTurn(
                tool_calls=[
                    ScriptedToolCall(
                        name="wait_for_event", arguments={"event_type": "ci.finished", **wait}
                    )
                ]
            ),
            ScriptedTurn(content="Got: {last_tool_result}"),
        ],
    )


def prompt_type() -> AgentTypeSpec:
    """Answers with its prompt (for executions that start waiting)."""
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        script=[ScriptedTurn(content="Prompt was: {prompt}")],
    )


async def deliver(
    http: httpx.AsyncClient,
    account: Account,
    event_type: str = "ci.finished",
    key: str | None = None,
    payload: object = None,
    **extra: object,
) -> httpx.Response:
    body = {"event_type": event_type, "key": key, "payload": payload, **extra}
    return await http.post("/api/events", json=body, headers=account.headers)


async def log_types(sessions: async_sessionmaker[AsyncSession], execution_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ExecutionLog.event_type)
            .where(ExecutionLog.execution_id == uuid.UUID(execution_id))
            .order_by(ExecutionLog.id)
        )
        return list(rows)


async def test_agent_waits_for_an_event_and_its_payload_is_the_tool_result(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"waiter": waiting_type(key="42")})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        parked = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
        assert parked["status"] == "awaiting_event"
        assert parked["wait"]["event"] == "ci.finished"
        assert parked["wait"]["key"] == "42"
        assert parked["wait"]["deadline"]
        other = await deliver(http, alice, key="7", payload={"conclusion": "failure"})
        assert other.status_code == 200, other.text
        assert other.json()["triggered_count"] == 0
        assert other.json()["kept_event_id"] is not None
        woke = await deliver(http, alice, key="42", payload={"conclusion": "success"})
        assert woke.json() == {
            "triggered_count": 1,
            "execution_ids": [created["id"]],
            "kept_event_id": None,
        }
        again = await deliver(http, alice, key="42", payload={"conclusion": "late"})
        assert again.json()["triggered_count"] == 0
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert done["status"] == "completed"
    assert '"conclusion": "success"' in done["output"]["response"]
    assert "ci.finished (key 42) arrived" in done["output"]["response"]
    assert done["metadata"]["event_payload"] == {"conclusion": "success"}
    assert done["wait"] is None
    types = await log_types(sessions, created["id"])
    assert types.index("event_waiting") < types.index("event_received")
    async with sessions() as session:
        signals = list(
            await session.scalars(
                select(ExecutionSignal).where(
                    ExecutionSignal.execution_id == uuid.UUID(created["id"])
                )
            )
        )
    assert [(s.signal_type, s.processed) for s in signals] == [("event", True)]


async def test_execution_started_waiting_runs_its_first_step_with_the_event_in_its_prompt(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"echo": prompt_type()})
    async with api_client(settings) as http:
        response = await http.post(
            "/api/agents",
            json={
                "agent_type": "echo",
                "input": {"prompt": "Review the build."},
                "await_event": {"event_type": "ci.finished", "timeout_seconds": 60},
            },
            headers=alice.headers,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["status"] == "awaiting_event"
        assert created["wait"]["timeout_seconds"] == 60
        await run_worker(settings)
        assert (await load(sessions, created["id"])).step_count == 0  # nothing ran yet
        woke = await deliver(http, alice, payload={"run": 1234})
        assert woke.json()["execution_ids"] == [created["id"]]
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert done["status"] == "completed"
    answer = done["output"]["response"]
    assert answer.startswith("Prompt was: Review the build.")
    assert '{"run": 1234}' in answer
    assert (await log_types(sessions, created["id"]))[:2] == ["event_waiting", "event_received"]


async def test_concurrent_deliveries_wake_each_waiter_exactly_once(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"waiter": waiting_type()})
    async with api_client(settings) as http:
        first = await start(http, alice, "waiter")
        second = await start(http, alice, "waiter")
        await run_worker(settings)
        responses = await asyncio.gather(
            *(deliver(http, alice, payload={"n": n}) for n in range(6))
        )
    assert all(r.status_code == 200 for r in responses)
    woken = [i for r in responses for i in r.json()["execution_ids"]]
    assert sorted(woken) == sorted([first["id"], second["id"]])
    async with sessions() as session:
        signals = list(
            await session.scalars(
                select(ExecutionSignal.execution_id).where(ExecutionSignal.signal_type == "event")
            )
        )
        kept = list(await session.scalars(select(Event)))
    assert sorted(map(str, signals)) == sorted([first["id"], second["id"]])
    # Every delivery that found nobody waiting any more is kept, none is lost.
    assert len(kept) == sum(1 for r in responses if r.json()["triggered_count"] == 0)


async def test_wait_times_out_and_the_model_reads_that_it_did(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"waiter": waiting_type(timeout_seconds=0.3)})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        assert (await load(sessions, created["id"])).status == "awaiting_event"
        await asyncio.sleep(0.5)
        await run_worker(settings)  # the wait's timer job is due now
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert done["status"] == "completed"
    assert "timed out" in done["output"]["response"]
    assert "event_timeout" in await log_types(sessions, created["id"])


async def test_a_lost_timer_is_made_up_by_the_sweep(
    alice, sessions, make_settings, run_worker, db, redis
):
    settings = make_settings(agent_types={"waiter": waiting_type(timeout_seconds=0.2)})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
    await redis.flushdb()  # the timer job is gone with Redis
    await asyncio.sleep(0.3)
    report = await sweep(db, redis, settings)
    assert report.expired == 1
    await run_worker(settings)
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.output is not None
    assert "timed out" in execution.output["response"]


async def test_pause_keeps_the_wait_and_resume_returns_to_it(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"waiter": waiting_type()})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        url = f"/api/agents/{created['id']}"
        created_wait = (await http.get(url, headers=alice.headers)).json()["wait"]
        paused = await http.post(f"{url}/pause", headers=alice.headers)
        assert paused.json()["status"] == "paused"
        resumed = await http.post(f"{url}/resume", headers=alice.headers)
        assert resumed.json()["status"] == "awaiting_event"
        waiting = (await http.get(url, headers=alice.headers)).json()
        assert waiting["wait"]["event"] == "ci.finished"
        assert waiting["wait"]["deadline"] == created_wait["deadline"]
        # Paused again, it still takes the event: it holds it, paused, until it is resumed.
        await http.post(f"{url}/pause", headers=alice.headers)
        held = await deliver(http, alice, payload="while paused")
        assert held.json()["execution_ids"] == [created["id"]]
        await run_worker(settings)
        still = (await http.get(url, headers=alice.headers)).json()
        assert (still["status"], still["wait"]) == ("paused", None)
        assert (await deliver(http, alice, payload="late")).json()["triggered_count"] == 0
        assert (await http.post(f"{url}/resume", headers=alice.headers)).json()["status"] == (
            "pending"
        )
        await run_worker(settings)
        done = (await http.get(url, headers=alice.headers)).json()
    assert done["status"] == "completed"
    assert '"while paused"' in done["output"]["response"]


async def test_a_wait_takes_an_event_kept_within_the_buffer(
    alice, sessions, make_settings, run_worker
):
    buffered = make_settings(
        agent_types={"echo": prompt_type()}, events=EventSettings(buffer_seconds=60)
    )
    async with api_client(buffered) as http:
        kept = (await deliver(http, alice, key="pr-1", payload={"merged": True})).json()
        assert kept["kept_event_id"] is not None
        response = await http.post(
            "/api/agents",
            json={
                "agent_type": "echo",
                "input": {"prompt": "Announce the merge."},
                "await_event": {"event_type": "ci.finished", "key": "pr-1"},
            },
            headers=alice.headers,
        )
        created = response.json()
        await run_worker(buffered)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert done["status"] == "completed"
    assert '{"merged": true}' in done["output"]["response"]
    async with sessions() as session:
        event = await session.get(Event, kept["kept_event_id"])
    assert event is not None
    assert str(event.consumed_by) == created["id"]


async def test_without_a_buffer_a_wait_sees_only_events_that_arrive_after_it(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"echo": prompt_type()})
    assert settings.events.buffer_seconds == 0
    async with api_client(settings) as http:
        await deliver(http, alice, payload="before")
        response = await http.post(
            "/api/agents",
            json={
                "agent_type": "echo",
                "input": {"prompt": "p"},
                "await_event": {"event_type": "ci.finished"},
            },
            headers=alice.headers,
        )
        await run_worker(settings)
    assert (await load(sessions, response.json()["id"])).status == "awaiting_event"


async def test_an_event_without_payload_is_kept_and_delivered_as_null(
    alice, sessions, make_settings, run_worker
):
    settings = make_settings(agent_types={"waiter": waiting_type()})
    async with api_client(settings) as http:
        kept = await http.post(
            "/api/events", json={"event_type": "ci.finished"}, headers=alice.headers
        )
        assert kept.status_code == 200, kept.text
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        woke = await http.post(
            "/api/events", json={"event_type": "ci.finished"}, headers=alice.headers
        )
        assert woke.json()["triggered_count"] == 1
        await run_worker(settings)
    execution = await load(sessions, created["id"])
    assert execution.status == "completed"
    assert execution.metadata_["event_payload"] is None


async def test_cancel_while_waiting_ends_the_wait(alice, sessions, make_settings, run_worker):
    settings = make_settings(agent_types={"waiter": waiting_type()})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        cancelled = await http.post(f"/api/agents/{created['id']}/cancel", headers=alice.headers)
        assert cancelled.json()["status"] == "cancelled"
        assert (await deliver(http, alice, payload=1)).json()["triggered_count"] == 0


async def test_only_admins_deliver_events_for_other_users(
    alice, sessions, make_settings, run_worker
):
    admin = await make_account(sessions, "root@example.com", is_admin=True)
    settings = make_settings(agent_types={"waiter": waiting_type()})
    async with api_client(settings) as http:
        created = await start(http, alice, "waiter")
        await run_worker(settings)
        bob = await make_account(sessions, "bob@example.com")
        refused = await deliver(http, bob, user_id=alice.user.id)
        assert refused.status_code == 403
        missing = await deliver(http, admin, user_id=999_999)
        assert missing.status_code == 404
        assert (await load(sessions, created["id"])).status == "awaiting_event"
        delivered = await deliver(http, admin, user_id=alice.user.id, payload="from ops")
    assert delivered.json()["execution_ids"] == [created["id"]]


async def test_an_invalid_event_is_refused_and_changes_nothing(alice, sessions, db, client):
    for body in (
        {"event_type": "bad type with spaces"},
        {"event_type": ""},
        {"event_type": "ok", "key": "x" * 201},
        {"event_type": "ok", "payload": "x" * 300_000},
        {"event_type": "ok", "extra": 1},
    ):
        response = await client.post("/api/events", json=body, headers=alice.headers)
        assert response.status_code == 422, body
    assert (await client.post("/api/events", json={"event_type": "ok"})).status_code == 401
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM agent_events"))).scalar() == 0
