"""``Idempotency-Key`` on ``POST /api/agents``: a retried start is answered, not repeated."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text

from app.executions.models import Execution
from tests.fixtures.users import make_account

BODY = {"agent_type": "steps-3", "input": {"prompt": "once"}}


async def count_executions(sessions, user_id: int) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(Execution).where(Execution.user_id == user_id)
            )
            or 0
        )


async def test_a_retried_start_replays_the_first_response_and_uses_no_quota(client, sessions):
    free = await make_account(sessions, "retry@example.com", tier="free")  # 1 at a time
    headers = {**free.headers, "Idempotency-Key": "order-42"}

    first = await client.post("/api/agents", json=BODY, headers=headers)
    again = await client.post("/api/agents", json=BODY, headers=headers)
    reordered = await client.post(
        "/api/agents",
        content='{"input": {"prompt": "once"},   "agent_type": "steps-3"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    limits = (await client.get("/api/me/limits", headers=free.headers)).json()

    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert reordered.status_code == 201
    assert reordered.json()["id"] == first.json()["id"]
    assert await count_executions(sessions, free.user.id) == 1
    assert limits["concurrent"]["used"] == 1  # a replay starts nothing (and is no 429)


async def test_a_key_sent_with_another_body_is_refused(client, sessions, alice):
    headers = {**alice.headers, "Idempotency-Key": "k-1"}
    await client.post("/api/agents", json=BODY, headers=headers)

    other = await client.post(
        "/api/agents",
        json={**BODY, "input": {"prompt": "something else"}},
        headers=headers,
    )

    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert await count_executions(sessions, alice.user.id) == 1


async def test_keys_are_per_user_and_bounded(client, sessions, alice, bob):
    shared = "same-key"
    mine = await client.post(
        "/api/agents", json=BODY, headers={**alice.headers, "Idempotency-Key": shared}
    )
    theirs = await client.post(
        "/api/agents", json=BODY, headers={**bob.headers, "Idempotency-Key": shared}
    )
    too_long = await client.post(
        "/api/agents", json=BODY, headers={**alice.headers, "Idempotency-Key": "k" * 256}
    )

    assert mine.json()["id"] != theirs.json()["id"]
    assert too_long.status_code == 422
    assert await count_executions(sessions, alice.user.id) == 1


async def test_concurrent_requests_with_one_key_create_one_execution(client, sessions, alice):
    headers = {**alice.headers, "Idempotency-Key": "burst"}

    responses = await asyncio.gather(
        *(client.post("/api/agents", json=BODY, headers=headers) for _ in range(8))
    )

    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" not in r.headers) == 1
    assert await count_executions(sessions, alice.user.id) == 1


async def test_a_failed_start_leaves_the_key_free(client, sessions):
    free = await make_account(sessions, "limited@example.com", tier="free")
    await client.post("/api/agents", json=BODY, headers=free.headers)  # uses the one slot
    headers = {**free.headers, "Idempotency-Key": "after-429"}

    refused = await client.post("/api/agents", json=BODY, headers=headers)
    async with sessions() as session:
        await session.execute(text("UPDATE agent_executions SET status = 'completed'"))
        await session.commit()
    accepted = await client.post("/api/agents", json=BODY, headers=headers)

    assert refused.status_code == 429
    assert accepted.status_code == 201
    assert "idempotent-replayed" not in accepted.headers


async def test_keys_older_than_a_day_are_forgotten(client, sessions, alice):
    headers = {**alice.headers, "Idempotency-Key": "yesterday"}
    first = await client.post("/api/agents", json=BODY, headers=headers)
    async with sessions() as session:
        await session.execute(
            text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        )
        await session.commit()

    later = await client.post("/api/agents", json=BODY, headers=headers)

    assert later.status_code == 201
    assert later.json()["id"] != first.json()["id"]


async def test_the_sweep_forgets_old_keys(client, sessions, alice, db, settings, redis):
    from app.executions.recovery import sweep

    await client.post("/api/agents", json=BODY, headers={**alice.headers, "Idempotency-Key": "a"})
    await client.post("/api/agents", json=BODY, headers={**alice.headers, "Idempotency-Key": "b"})
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'a'"
            )
        )
        await session.commit()

    await sweep(db, redis, settings)

    async with sessions() as session:
        keys = list(await session.scalars(text("SELECT key FROM idempotency_keys")))
    assert keys == ["b"]
