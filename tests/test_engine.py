from __future__ import annotations

import uuid

from sqlalchemy import select, text

from app.executions.models import Execution, ExecutionLog, ExecutionMessage


async def start(client, account, agent_type: str = "demo", prompt: str = "hello world") -> dict:
    response = await client.post(
        "/api/agents",
        json={"agent_type": agent_type, "input": {"prompt": prompt}},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_demo_agent_completes_with_what_it_read(client, alice, run_worker, sessions, settings):
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
