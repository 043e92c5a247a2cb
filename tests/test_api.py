from __future__ import annotations

import time
import uuid

import httpx
import pytest

from app import health
from app.main import create_app
from tests.fixtures.executions import start


async def test_requests_without_a_valid_token_get_401_problem(client, alice):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await client.get("/api/agents", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 401
        assert body["type"] == "/problems/unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_another_users_execution_is_not_found(client, alice, bob):
    created = await start(client, alice)
    for path in (f"/api/agents/{created['id']}", f"/api/agents/{created['id']}/logs"):
        response = await client.get(path, headers=bob.headers)
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/execution-not-found"
    unknown = await client.get(f"/api/agents/{uuid.uuid4()}", headers=alice.headers)
    assert unknown.status_code == 404
    listing = await client.get("/api/agents", headers=bob.headers)
    assert listing.json()["total"] == 0


async def test_unknown_agent_type_is_422_listing_known_types(client, alice):
    response = await client.post(
        "/api/agents", json={"agent_type": "nope", "input": {"prompt": "x"}}, headers=alice.headers
    )
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "/problems/unknown-agent-type"
    assert {"demo", "code-assistant", "research", "code-review"} <= set(body["known_agent_types"])
    assert "demo" in body["detail"]
    assert (await client.get("/api/agents", headers=alice.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"agent_type": "demo"},
        {"agent_type": "demo", "input": {}},
        {"agent_type": "demo", "input": {"prompt": ""}},
        {"agent_type": "demo", "input": "hello"},
        {"agent_type": "demo", "input": {"prompt": "x"}, "metadata": []},
        {"agent_type": "demo", "input": {"prompt": "x"}, "unexpected": 1},
    ],
)
async def test_bad_bodies_are_422_problems_and_change_nothing(client, alice, payload):
    response = await client.post("/api/agents", json=payload, headers=alice.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "/problems/validation-error"
    assert body["errors"]
    assert (await client.get("/api/agents", headers=alice.headers)).json()["total"] == 0


async def test_malformed_json_is_422(client, alice):
    response = await client.post(
        "/api/agents",
        content=b"{not json",
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert response.status_code == 422


async def test_start_returns_execution_with_location(client, alice):
    response = await client.post(
        "/api/agents",
        json={"agent_type": "demo", "input": {"prompt": "hi", "extra": 1}, "metadata": {"k": "v"}},
        headers=alice.headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/api/agents/{body['id']}"
    assert body["input"] == {"prompt": "hi", "extra": 1}
    assert body["metadata"] == {"k": "v"}
    assert body["queue"] == "agents-default"
    assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}


async def test_list_is_newest_first_paginated_and_filtered(client, alice, run_worker):
    ids = [(await start(client, alice, "steps-3"))["id"] for _ in range(5)]
    page1 = (await client.get("/api/agents?per_page=2", headers=alice.headers)).json()
    page3 = (await client.get("/api/agents?per_page=2&page=3", headers=alice.headers)).json()
    assert page1["total"] == 5
    assert [item["id"] for item in page1["items"]] == ids[::-1][:2]
    assert [item["id"] for item in page3["items"]] == ids[:1]
    pending = (await client.get("/api/agents?status=pending", headers=alice.headers)).json()
    assert pending["total"] == 5
    await run_worker()
    done = (await client.get("/api/agents?status=completed", headers=alice.headers)).json()
    assert done["total"] == 5
    bad = await client.get("/api/agents?status=bogus", headers=alice.headers)
    assert bad.status_code == 422


async def test_logs_cursor_and_filters(client, alice, run_worker):
    created = await start(client, alice, "steps-3")
    await run_worker()
    url = f"/api/agents/{created['id']}/logs"
    logs = (await client.get(url, headers=alice.headers)).json()
    ids = [entry["id"] for entry in logs]
    assert ids == sorted(ids)
    events = [entry["event_type"] for entry in logs]
    # Each step's tool rows come just before its own row; the last step calls no tool.
    assert events == [
        "status_changed", "status_changed",
        "tool_called", "tool_completed", "step_completed",
        "tool_called", "tool_completed", "step_completed",
        "step_completed", "completed",
    ]  # fmt: skip
    after = (await client.get(f"{url}?after_id={ids[2]}", headers=alice.headers)).json()
    assert [entry["id"] for entry in after] == ids[3:]
    steps = (
        await client.get(f"{url}?event_type=step_completed&limit=2", headers=alice.headers)
    ).json()
    assert [entry["context"]["tool_names"] for entry in steps] == [["list_files"], ["list_files"]]
    assert steps[0]["context"]["has_tool_calls"] is True
    assert steps[0]["context"]["step_type"] == "tool_calls"
    assert [entry["context"]["tokens_used"] for entry in steps] == [15, 15]
    assert [entry["context"]["token_usage"] for entry in steps] == [15, 30]
    tools = (await client.get(f"{url}?event_type=tool_completed", headers=alice.headers)).json()
    assert [entry["id"] for entry in tools] == [ids[3], ids[6]]
    outcomes = [(e["level"], e["context"]["tool"], e["context"]["outcome"]) for e in tools]
    assert outcomes == [("info", "list_files", "ok")] * 2
    assert [entry["context"]["tool_call_id"] for entry in tools] == ["call_0_0", "call_1_0"]
    detail = (await client.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    assert [entry["id"] for entry in detail["logs"]] == ids


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_readiness_answers_in_time_when_every_database_connection_is_busy(
    make_settings, clean_state, monkeypatch
):
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.3)
    app = create_app(make_settings(db_pool_size=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            async with app.state.db.connect():  # the pool's only connection, held
                started = time.monotonic()
                busy = await http.get("/readyz")
                waited = time.monotonic() - started
            again = await http.get("/readyz")
    assert busy.status_code == 503
    assert busy.json()["failing"] == ["database"]
    assert waited < 2  # not the pool's 30 s
    assert again.status_code == 200


async def test_openapi_has_stable_operation_ids_and_problem_responses(client):
    spec = (await client.get("/openapi.json")).json()
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    assert {
        "startExecution",
        "listExecutions",
        "getExecution",
        "listExecutionLogs",
        "health",
        "readiness",
    } <= set(operations)
    assert "401" in operations["startExecution"]["responses"]
    assert "422" in operations["startExecution"]["responses"]
    assert "404" in operations["getExecution"]["responses"]


async def test_unknown_route_is_problem(client):
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_tier_limits_are_enforced_with_429_and_retry_after(client, sessions):
    from tests.fixtures.users import make_account

    free = await make_account(sessions, "free@example.com", tier="free")
    await start(client, free, "steps-3")
    response = await client.post(
        "/api/agents",
        json={"agent_type": "steps-3", "input": {"prompt": "x"}},
        headers=free.headers,
    )
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    limits = response.json()["limits"]
    own = (await client.get("/api/me/limits", headers=free.headers)).json()
    assert own["hourly"]["next_slot_at"] is not None
    assert limits == {**own, "retry_after_seconds": int(response.headers["retry-after"])}
    assert {k: own[k] for k in ("tier", "concurrent")} == {
        "tier": "free",
        "concurrent": {"used": 1, "limit": 1},
    }
    assert (own["hourly"]["used"], own["hourly"]["limit"]) == (1, 10)
    assert own["retry_after_seconds"] == 5
    assert (await client.get("/api/agents", headers=free.headers)).json()["total"] == 1


async def test_hourly_limit_counts_finished_executions(client, sessions, run_worker):
    import asyncio

    from tests.fixtures.users import make_account

    free = await make_account(sessions, "hourly@example.com", tier="free")
    for _ in range(10):
        await start(client, free, "steps-3")
        await run_worker()
    response = await client.post(
        "/api/agents",
        json={"agent_type": "steps-3", "input": {"prompt": "x"}},
        headers=free.headers,
    )
    assert response.status_code == 429
    assert response.json()["limits"]["hourly"]["used"] == 10
    assert 3500 < int(response.headers["retry-after"]) <= 3600
    # Concurrent requests from one user are serialized: exactly as many pass as the limit allows.
    pro = await make_account(sessions, "burst@example.com", tier="pro")
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/agents",
                json={"agent_type": "steps-3", "input": {"prompt": "x"}},
                headers=pro.headers,
            )
            for _ in range(12)
        )
    )
    assert sorted(r.status_code for r in responses) == [201] * 5 + [429] * 7


@pytest.mark.parametrize(
    "body",
    [
        b'{"agent_type": "demo", "input": {"prompt": "x"}, "metadata": {"n": NaN}}',
        b'{"agent_type": "demo", "input": {"prompt": "x", "n": Infinity}}',
        b'{"agent_type": "demo", "input": {"prompt": "x"}, "metadata": {"s": "\\udc00"}}',
        b'{"agent_type": "demo", "input": {"prompt": "x"}, "metadata": {"big": "'
        + b"x" * 70_000
        + b'"}}',
    ],
)
async def test_values_postgres_cannot_store_are_422_not_500(client, alice, body):
    response = await client.post(
        "/api/agents", content=body, headers={**alice.headers, "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/agents", headers=alice.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "query",
    ["level=%00", "event_type=a%00b", f"after_id={2**63}", "limit=0", "limit=1001"],
)
async def test_bad_log_queries_are_422(client, alice, query):
    created = await start(client, alice)
    response = await client.get(f"/api/agents/{created['id']}/logs?{query}", headers=alice.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_huge_page_number_is_422(client, alice):
    response = await client.get("/api/agents?page=100000000000", headers=alice.headers)
    assert response.status_code == 422


async def test_own_limits_show_usage_and_when_the_next_hourly_slot_frees(client, sessions):
    from tests.fixtures.users import make_account

    fresh = await make_account(sessions, "quota@example.com", tier="pro")
    before = (await client.get("/api/me/limits", headers=fresh.headers)).json()
    await start(client, fresh, "steps-3")
    after = (await client.get("/api/me/limits", headers=fresh.headers)).json()
    anonymous = await client.get("/api/me/limits")

    assert before == {
        "tier": "pro",
        "concurrent": {"used": 0, "limit": 5},
        "hourly": {"used": 0, "limit": 100, "next_slot_at": None},
        "retry_after_seconds": None,
    }
    assert after["concurrent"]["used"] == 1
    assert after["hourly"]["used"] == 1
    assert after["hourly"]["next_slot_at"] is not None
    assert after["retry_after_seconds"] is None
    assert anonymous.status_code == 401
