"""Warning rows a step writes: a retried model call, a limit nearly reached."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from app.agents.spec import AgentTypeSpec
from app.executions.models import ExecutionLog
from tests.conftest import counting_script
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.openai_server import FakeOpenAI, fake_openai, fake_openai_server

__all__ = ["fake_openai", "fake_openai_server"]


async def logs_of(sessions, execution_id: str) -> list[ExecutionLog]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ExecutionLog)
            .where(ExecutionLog.execution_id == uuid.UUID(execution_id))
            .order_by(ExecutionLog.id)
        )
        return list(rows)


async def test_a_retried_model_call_leaves_a_warning_before_its_step(
    alice, sessions, make_settings, run_worker, fake_openai: FakeOpenAI
):
    spec = AgentTypeSpec(base_url=fake_openai.base_url, api_key_env=None, max_retries=2)
    settings = make_settings(agent_types={"remote": spec})
    fake_openai.enqueue(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    fake_openai.enqueue_completion("fine")
    async with api_client(settings) as http:
        created = await start(http, alice, "remote")
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
        warnings = (
            await http.get(
                f"/api/agents/{created['id']}/logs?event_type=warning", headers=alice.headers
            )
        ).json()

    assert done["status"] == "completed"
    logs = await logs_of(sessions, created["id"])
    types = [row.event_type for row in logs]
    assert types.index("warning") < types.index("step_completed")
    [warning] = warnings
    assert warning["level"] == "warning"
    assert warning["context"] == {
        "kind": "provider_retry",
        "status": 429,
        "attempt": 1,
        "attempts": 3,
        "wait_seconds": 0,
        "failure": "HTTP 429: slow down",
    }
    assert types[-1] == "completed"


async def test_reaching_80_percent_of_a_limit_warns_once(
    alice, sessions, make_settings, run_worker
):
    # Each scripted step costs 15 tokens: 4 steps of 5 cross 80% of max_steps at step 4, and
    # 60 of 70 tokens cross 80% of max_tokens (56) at step 4 as well.
    spec = AgentTypeSpec(
        provider="scripted",
        capabilities=["files"],
        max_steps=5,
        max_tokens=70,
        script=counting_script(4),
    )
    settings = make_settings(agent_types={"limited": spec})
    async with api_client(settings) as http:
        created = await start(http, alice, "limited")
        await run_worker(settings)

    warnings = [
        row for row in await logs_of(sessions, created["id"]) if row.event_type == "warning"
    ]
    assert [(w.context["limit"], w.context["used"], w.context["maximum"]) for w in warnings] == [
        ("max_steps", 4, 5),
        ("max_tokens", 60, 70),
    ]
    assert all(w.level == "warning" and w.context["kind"] == "limit" for w in warnings)
