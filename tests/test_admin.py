from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text

from app.db import transaction
from app.executions.models import Execution
from tests.fixtures.executions import start
from tests.fixtures.users import make_account


@pytest.fixture
async def admin(sessions):
    return await make_account(sessions, "root@example.com", is_admin=True)


async def insert_logs(sessions, execution_id: str, count: int) -> None:
    """``count`` logs: level ``warning`` for every third, else ``info``; event types alternate
    between ``tick`` and ``tock``; messages ``log 1`` ... ``log {count}``."""
    async with transaction(sessions) as session:
        await session.execute(
            text(
                """
                INSERT INTO agent_logs (execution_id, level, event_type, message)
                SELECT CAST(:id AS uuid),
                       CASE WHEN g % 3 = 0 THEN 'warning' ELSE 'info' END,
                       CASE WHEN g % 2 = 0 THEN 'tock' ELSE 'tick' END,
                       'log ' || g
                FROM generate_series(1, :count) AS g
                """
            ),
            {"id": execution_id, "count": count},
        )


async def test_admin_routes_need_an_admin_token(client, alice, admin):
    created = await start(client, alice)
    paths = [
        "/api/admin/agents",
        f"/api/admin/agents/{created['id']}",
        f"/api/admin/agents/{created['id']}/logs",
    ]
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["type"] == "/problems/unauthorized"
        forbidden = await client.get(path, headers=alice.headers)
        assert forbidden.status_code == 403, path
        assert forbidden.headers["content-type"] == "application/problem+json"
        assert forbidden.json()["type"] == "/problems/forbidden"
        assert (await client.get(path, headers=admin.headers)).status_code == 200, path


async def test_unknown_execution_is_404(client, admin):
    for path in ("/api/admin/agents/{}", "/api/admin/agents/{}/logs"):
        response = await client.get(path.format(uuid.uuid4()), headers=admin.headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "/problems/execution-not-found"
    malformed = await client.get("/api/admin/agents/not-a-uuid", headers=admin.headers)
    assert malformed.status_code == 422


async def test_list_shows_every_users_executions_with_owner_and_log_counts(
    client, alice, bob, admin, run_worker
):
    done = await start(client, alice, "steps-3")
    await run_worker()
    pending = await start(client, bob, "demo")
    also_alice = await start(client, alice, "demo")

    body = (await client.get("/api/admin/agents", headers=admin.headers)).json()
    assert body["total"] == 3
    assert body["page"] == 1
    assert body["per_page"] == 50
    items = {item["id"]: item for item in body["items"]}
    assert [item["id"] for item in body["items"]] == [also_alice["id"], pending["id"], done["id"]]

    logs = (await client.get(f"/api/agents/{done['id']}/logs", headers=alice.headers)).json()
    # Created, running, 3 steps (the first two with a tool_called and a tool_completed row
    # each), completed.
    assert len(logs) == 10
    assert items[done["id"]]["logs_count"] == 10
    assert items[pending["id"]]["logs_count"] == 1
    assert items[done["id"]]["user"] == {
        "id": alice.user.id,
        "name": alice.user.name,
        "email": "alice@example.com",
    }
    assert items[pending["id"]]["user"]["email"] == "bob@example.com"
    # Every ExecutionOut field is there, with the same values the owner sees.
    own = (await client.get(f"/api/agents/{done['id']}", headers=alice.headers)).json()
    for key in set(own) - {"logs", "children"}:
        assert items[done["id"]][key] == own[key], key
    assert items[done["id"]]["status"] == "completed"
    assert items[done["id"]]["output"] == {"response": "done after 3 steps"}


async def test_list_filters(client, alice, bob, admin, run_worker):
    done = await start(client, alice, "steps-3")
    await run_worker()
    alice_demo = await start(client, alice, "demo")
    bob_demo = await start(client, bob, "demo")
    bob_steps = await start(client, bob, "steps-3")

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/api/admin/agents?{query}", headers=admin.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["items"])
        return [item["id"] for item in body["items"]]

    assert await ids("status=completed") == [done["id"]]
    assert await ids("status=pending") == [bob_steps["id"], bob_demo["id"], alice_demo["id"]]
    assert await ids("status=failed") == []
    assert await ids(f"user_id={bob.user.id}") == [bob_steps["id"], bob_demo["id"]]
    assert await ids(f"user_id={admin.user.id}") == []
    assert await ids("agent_type=demo") == [bob_demo["id"], alice_demo["id"]]
    assert await ids("agent_type=steps-3") == [bob_steps["id"], done["id"]]
    assert await ids(f"agent_type=steps-3&user_id={alice.user.id}") == [done["id"]]
    assert await ids(f"agent_type=steps-3&status=pending&user_id={bob.user.id}") == [
        bob_steps["id"]
    ]
    assert await ids("agent_type=subagent%3Adeep-research") == []


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "user_id=0",
        f"user_id={2**63}",
        "user_id=x",
        "agent_type=",
        "agent_type=a%00b",
        "agent_type=" + "x" * 101,
        "page=0",
        "page=1000001",
        "page=100000000000",
    ],
)
async def test_bad_list_queries_are_422(client, admin, query):
    response = await client.get(f"/api/admin/agents?{query}", headers=admin.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/validation-error"


async def test_list_pages_fifty_newest_first(client, sessions, alice, bob, admin):
    base = datetime(2024, 1, 1, tzinfo=UTC)
    async with transaction(sessions) as session:
        rows = [
            Execution(
                user_id=(alice if i % 2 else bob).user.id,
                agent_type="demo",
                queue="agents-default",
                input={"prompt": f"n{i}"},
                # Pairs share a timestamp so the id breaks the tie.
                created_at=base + timedelta(seconds=i // 2),
            )
            for i in range(123)
        ]
        session.add_all(rows)
    ordered = sorted(rows, key=lambda row: (row.created_at, row.id), reverse=True)
    expected = [str(row.id) for row in ordered]
    alice_expected = [str(row.id) for row in ordered if row.user_id == alice.user.id]
    pages = []
    for page in (1, 2, 3):
        body = (await client.get(f"/api/admin/agents?page={page}", headers=admin.headers)).json()
        assert body["total"] == 123
        assert body["page"] == page
        assert body["per_page"] == 50
        assert all(item["logs_count"] == 0 for item in body["items"])
        pages.append([item["id"] for item in body["items"]])
    assert [len(ids) for ids in pages] == [50, 50, 23]
    assert pages[0] + pages[1] + pages[2] == expected
    beyond = (await client.get("/api/admin/agents?page=4", headers=admin.headers)).json()
    assert beyond["items"] == []
    assert beyond["total"] == 123
    alices = (
        await client.get(f"/api/admin/agents?user_id={alice.user.id}&page=2", headers=admin.headers)
    ).json()
    assert alices["total"] == 61
    assert [item["id"] for item in alices["items"]] == alice_expected[50:]


async def test_list_is_one_query_for_the_page_whatever_its_size(client, sessions, alice, admin):
    """Two statements for the listing (the total and the page) besides authentication, whether
    the page holds one execution or fifty, each with logs: no query per item."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = client._transport.app.state.db.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        counts = []
        for _ in range(2):
            created = await start(client, admin)
            await insert_logs(sessions, created["id"], 3)
            statements.clear()
            body = (await client.get("/api/admin/agents", headers=admin.headers)).json()
            counts.append(len(statements))
            assert [item["logs_count"] for item in body["items"]] == [4] * len(body["items"])
        async with transaction(sessions) as session:
            session.add_all(
                Execution(user_id=alice.user.id, agent_type="demo", queue="q", input={})
                for _ in range(60)
            )
        statements.clear()
        body = (await client.get("/api/admin/agents", headers=admin.headers)).json()
        assert len(body["items"]) == 50
        counts.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert counts[0] == counts[1] == counts[2]
    listing = [s for s in statements if "agent_executions" in s]
    assert len(listing) == 2, listing


async def test_detail_has_owner_children_and_logs_oldest_first(
    client, sessions, alice, admin, run_worker
):
    created = await start(client, alice, "steps-3")
    await run_worker()
    detail = (await client.get(f"/api/admin/agents/{created['id']}", headers=admin.headers)).json()
    own = (await client.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()
    for key in own:
        assert detail[key] == own[key], key
    assert detail["user"] == {
        "id": alice.user.id,
        "name": alice.user.name,
        "email": alice.user.email,
    }
    assert detail["children"] == []
    assert detail["logs_count"] == 10
    assert detail["parent_id"] is None

    async with transaction(sessions) as session:
        child = Execution(
            user_id=alice.user.id,
            agent_type="subagent:quick-lookup",
            queue="agents-default",
            input={"prompt": "look"},
            parent_id=uuid.UUID(created["id"]),
            depth=1,
        )
        session.add(child)
    parent = (await client.get(f"/api/admin/agents/{created['id']}", headers=admin.headers)).json()
    assert [(c["id"], c["agent_type"], c["status"]) for c in parent["children"]] == [
        (str(child.id), "subagent:quick-lookup", "pending")
    ]
    shown = (await client.get(f"/api/admin/agents/{child.id}", headers=admin.headers)).json()
    assert shown["parent_id"] == created["id"]
    assert shown["depth"] == 1
    assert shown["logs"] == []
    assert shown["logs_count"] == 0
    assert shown["user"]["id"] == alice.user.id
    assert [entry["event_type"] for entry in detail["logs"]] == [
        "status_changed",
        "status_changed",
        *["tool_called", "tool_completed", "step_completed"] * 2,
        "step_completed",
        "completed",
    ]


async def test_detail_caps_logs_at_the_latest_500(client, sessions, alice, admin):
    created = await start(client, alice)
    await insert_logs(sessions, created["id"], 600)
    detail = (await client.get(f"/api/admin/agents/{created['id']}", headers=admin.headers)).json()
    assert detail["logs_count"] == 601
    logs = detail["logs"]
    assert len(logs) == 500
    ids = [entry["id"] for entry in logs]
    assert ids == sorted(ids)
    assert [entry["message"] for entry in logs] == [f"log {n}" for n in range(101, 601)]


async def test_logs_are_paged_oldest_first_with_filters_and_cursor(client, sessions, alice, admin):
    created = await start(client, alice)
    await insert_logs(sessions, created["id"], 250)
    url = f"/api/admin/agents/{created['id']}/logs"

    async def get(query: str = "") -> dict:
        response = await client.get(f"{url}?{query}", headers=admin.headers)
        assert response.status_code == 200, response.text
        return response.json()

    pages = [await get(f"page={page}") for page in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [251] * 4
    assert [p["per_page"] for p in pages] == [100] * 4
    assert [len(p["items"]) for p in pages] == [100, 100, 51, 0]
    everything = [entry for p in pages for entry in p["items"]]
    ids = [entry["id"] for entry in everything]
    assert ids == sorted(ids)
    assert len(set(ids)) == 251
    assert everything[0]["event_type"] == "status_changed"
    assert [entry["message"] for entry in everything[1:]] == [f"log {n}" for n in range(1, 251)]

    first = await get()
    assert first["page"] == 1
    assert first["items"] == pages[0]["items"]

    after = await get(f"after_id={ids[150]}")
    assert after["total"] == 100
    assert [entry["id"] for entry in after["items"]] == ids[151:]
    after_page2 = await get(f"after_id={ids[100]}&page=2")
    assert after_page2["total"] == 150
    assert [entry["id"] for entry in after_page2["items"]] == ids[201:]
    assert (await get(f"after_id={ids[-1]}"))["total"] == 0

    warnings = await get("level=warning")
    assert warnings["total"] == 83
    assert [entry["message"] for entry in warnings["items"]] == [
        f"log {n}" for n in range(3, 251, 3)
    ]
    tocks = await get("event_type=tock&level=warning")
    assert tocks["total"] == 41
    assert [entry["message"] for entry in tocks["items"]] == [f"log {n}" for n in range(6, 251, 6)]
    created_logs = await get("event_type=status_changed")
    assert [entry["id"] for entry in created_logs["items"]] == [ids[0]]
    late_tocks = await get(f"event_type=tock&after_id={ids[200]}")
    assert [entry["message"] for entry in late_tocks["items"]] == [
        f"log {n}" for n in range(202, 251, 2)
    ]
    assert (await get("level=debug"))["items"] == []


@pytest.mark.parametrize(
    "query",
    [
        "level=%00",
        "level=INFO",
        "event_type=a%00b",
        "event_type=step-completed",
        "after_id=-1",
        f"after_id={2**63}",
        "page=0",
        "page=1000001",
    ],
)
async def test_bad_log_queries_are_422(client, alice, admin, query):
    created = await start(client, alice)
    response = await client.get(
        f"/api/admin/agents/{created['id']}/logs?{query}", headers=admin.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_documents_the_admin_routes(client):
    spec = (await client.get("/openapi.json")).json()
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    for operation_id in ("adminListExecutions", "adminGetExecution", "adminListExecutionLogs"):
        responses = operations[operation_id]["responses"]
        assert {"200", "401", "403"} <= set(responses), operation_id
        assert operations[operation_id]["tags"] == ["admin"]
    assert "404" in operations["adminGetExecution"]["responses"]
    assert "404" in operations["adminListExecutionLogs"]["responses"]
    paths = spec["paths"]
    assert "get" in paths["/api/admin/agents"]
    assert "get" in paths["/api/admin/agents/{execution_id}"]
    assert "get" in paths["/api/admin/agents/{execution_id}/logs"]
    item = spec["components"]["schemas"]["AdminExecution"]["properties"]
    assert {"user", "logs_count", "status", "agent_type", "metadata"} <= set(item)
