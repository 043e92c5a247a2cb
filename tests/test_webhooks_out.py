"""Completion webhooks out, end to end: subscriptions made through the API, executions run by
the real worker, deliveries received by a real local HTTP server that checks their Standard
Webhooks signatures, and every attempt read back from ``GET /api/webhooks/{id}/deliveries``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.config import OutboundWebhooks, Settings
from app.outbound.service import attempt_delivery, new_secret
from app.webhooks.signatures import SignatureError, verify_standard
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.receiver import Received, Reply, receiving
from tests.fixtures.users import Account

RunWorker = Callable[..., Awaitable[None]]


def allowing(make_settings: Callable[..., Settings], **tuning: Any) -> Settings:
    """Settings whose webhooks may go to this machine (the receiver), with quick retries."""
    outbound = {"allow_private_networks": True, "first_retry_seconds": 0.3, **tuning}
    return make_settings(outbound_webhooks=OutboundWebhooks(**outbound))


async def subscribe(
    http: httpx.AsyncClient, account: Account, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url} if events is None else {"url": url, "events": events}
    response = await http.post("/api/webhooks", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(
    http: httpx.AsyncClient, account: Account, subscription_id: int
) -> list[dict[str, Any]]:
    response = await http.get(
        f"/api/webhooks/{subscription_id}/deliveries", headers=account.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settle(
    http: httpx.AsyncClient,
    account: Account,
    subscription_id: int,
    run_worker: RunWorker,
    settings: Settings,
    rounds: int = 6,
) -> list[dict[str, Any]]:
    """Run the worker, and again whenever a retry falls due, until no delivery is pending."""
    for _ in range(rounds):
        await run_worker(settings)
        items = await deliveries(http, account, subscription_id)
        due = [when(d["next_attempt_at"]) for d in items if d["status"] == "pending"]
        if not due:
            return items
        await asyncio.sleep(max(0.0, max(due) - time.time()) + 0.05)
    raise AssertionError(f"deliveries still pending after {rounds} rounds: {items}")


def when(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def verified(request: Received, secret: str) -> str:
    return verify_standard([secret], request.headers, request.body)


async def test_a_completion_is_delivered_once_signed_with_the_subscription_secret(
    make_settings, alice, run_worker
):
    settings = allowing(make_settings)
    async with receiving() as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        assert subscription["events"] == ["cancelled", "completed", "failed"]
        assert subscription["secret"].startswith("whsec_")
        execution = await start(http, alice, "steps-3")
        await run_worker(settings)
        await run_worker(settings)

        [request] = receiver.requests
        assert verified(request, subscription["secret"]) == request.headers["webhook-id"]
        with pytest.raises(SignatureError):
            verified(request, new_secret())
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        message = request.json
        assert set(message) == {"type", "timestamp", "data"}
        assert message["type"] == "execution.completed"
        assert abs(datetime.fromisoformat(message["timestamp"]).timestamp() - request.at) < 5
        data = message["data"]
        assert data["id"] == execution["id"]
        assert data["status"] == "completed"
        assert data["output"]
        assert "logs" not in data
        shown = (await http.get(f"/api/agents/{execution['id']}", headers=alice.headers)).json()
        assert {key: shown[key] for key in data} == data

        await run_worker(settings)
        assert len(receiver.requests) == 1  # nothing more once delivered

        [delivery] = await deliveries(http, alice, subscription["id"])
    assert delivery["status"] == "delivered"
    assert delivery["message_id"] == request.headers["webhook-id"]
    assert delivery["execution_id"] == execution["id"]
    assert delivery["event_type"] == "completed"
    assert delivery["delivered_at"] is not None
    assert delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert attempt["number"] == 1
    assert attempt["status_code"] == 200
    assert attempt["duration_ms"] >= 0
    assert attempt["error"] is None
    assert attempt["response_excerpt"] == "thanks"
    assert attempt["next_attempt_at"] is None


async def test_a_receiver_failing_twice_gets_three_attempts_with_growing_delays_and_one_id(
    make_settings, alice, run_worker
):
    settings = allowing(make_settings, first_retry_seconds=0.3)
    failing = (Reply(503, b"busy"), Reply(drop=True), Reply(200, b"at last"))
    async with receiving(*failing) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        [delivery] = await settle(http, alice, subscription["id"], run_worker, settings)

    first, second, third = receiver.requests
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    for request in receiver.requests:
        assert verified(request, subscription["secret"]) == delivery["message_id"]
    assert delivery["status"] == "delivered"
    failed_503, dropped, succeeded = delivery["attempts"]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert (failed_503["status_code"], failed_503["error"]) == (503, None)
    assert failed_503["response_excerpt"] == "busy"
    assert dropped["status_code"] is None
    assert dropped["error"]  # the connection closed without an answer
    assert (succeeded["status_code"], succeeded["next_attempt_at"]) == (200, None)
    # Delays chosen after each failure: 0.3 s then 0.6 s, each ±20%.
    delays = [when(failed_503["next_attempt_at"]) - first.at]
    delays.append(when(dropped["next_attempt_at"]) - second.at)
    assert 0.3 * 0.8 <= delays[0] < 0.3 * 1.2 + 0.2
    assert 0.6 * 0.8 <= delays[1] < 0.6 * 1.2 + 0.2
    assert delays[1] > delays[0]
    # No attempt came before its time. (How late each came depends on when the test's burst
    # worker runs again, so the gaps themselves need not grow: the delays above do.)
    gaps = [second.at - first.at, third.at - second.at]
    assert gaps[0] >= delays[0] - 0.01
    assert gaps[1] >= delays[1] - 0.01


async def test_retry_after_delays_the_next_attempt_beyond_the_backoff(
    make_settings, alice, run_worker
):
    settings = allowing(make_settings, first_retry_seconds=0.01)
    limited = Reply(429, b"slow down", headers={"retry-after": "1"})
    async with receiving(limited) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        [delivery] = await settle(http, alice, subscription["id"], run_worker, settings)

    first, second = receiver.requests
    assert delivery["status"] == "delivered"
    told, succeeded = delivery["attempts"]
    assert told["status_code"] == 429
    assert when(told["next_attempt_at"]) - first.at >= 1.0
    assert second.at - first.at >= 1.0
    assert succeeded["status_code"] == 200


async def test_retry_after_given_as_an_http_date_without_a_zone_is_honoured(
    make_settings, alice, run_worker
):
    # RFC 9110 §5.6.7: recipients must accept the obsolete asctime() form, which has no zone
    # (Python parses it into a naive datetime).
    settings = allowing(make_settings, first_retry_seconds=0.01)
    later = time.gmtime(time.time() + 3)
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", later)
    limited = Reply(503, headers={"retry-after": asctime})
    async with receiving(limited) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        await run_worker(settings)
        [delivery] = await deliveries(http, alice, subscription["id"])
        assert len(receiver.requests) == 1
        [attempt] = delivery["attempts"]
        assert attempt["status_code"] == 503
        # Whole seconds: at least 1 s of the 3 asked for is left whatever the rounding.
        assert when(attempt["next_attempt_at"]) - receiver.requests[0].at >= 1.0


async def test_a_timeout_is_recorded_and_retried_until_max_attempts_then_the_delivery_fails(
    make_settings, alice, run_worker
):
    settings = allowing(
        make_settings, max_attempts=2, first_retry_seconds=0.05, timeout_seconds=0.3
    )
    replies = (Reply(delay=2.0), Reply(503, b"still down"))
    async with receiving(*replies) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        [delivery] = await settle(http, alice, subscription["id"], run_worker, settings)
        assert delivery["status"] == "failed"
        assert delivery["next_attempt_at"] is None
        timed_out, last = delivery["attempts"]
        assert timed_out["status_code"] is None
        assert "timed out" in timed_out["error"]
        assert 250 <= timed_out["duration_ms"] < 1500
        assert timed_out["next_attempt_at"] is not None
        assert (last["status_code"], last["next_attempt_at"]) == (503, None)

        await asyncio.sleep(0.2)
        await run_worker(settings)
        assert len(receiver.requests) == 2  # no attempt after the last
        assert len((await deliveries(http, alice, subscription["id"]))[0]["attempts"]) == 2


async def test_the_timeout_bounds_a_whole_attempt_not_each_read(make_settings, alice, run_worker):
    # Each byte comes well within the timeout; the reply as a whole takes 3 s.
    settings = allowing(make_settings, max_attempts=1, timeout_seconds=0.3)
    dripping = Reply(200, b"x" * 30, drip=0.1)
    async with receiving(dripping) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        await run_worker(settings)
        [delivery] = await deliveries(http, alice, subscription["id"])
    assert len(receiver.requests) == 1
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]
    assert "timed out" in attempt["error"]
    assert 250 <= attempt["duration_ms"] < 1500


async def test_private_and_malformed_urls_are_refused_and_nothing_is_stored(client, alice):
    async with receiving() as receiver:
        refused = [
            receiver.url,
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/",
            "http://10.1.2.3/hook",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "ftp://x",
            "http://user:secret@example.com/hook",
            "/relative/hook",
            "example.com/hook",
            "http:///no-host",
            "http://example.com:99999/hook",
            "http://example.com:port/hook",
        ]
        for url in refused:
            response = await client.post("/api/webhooks", json={"url": url}, headers=alice.headers)
            assert response.status_code == 422, (url, response.text)
        for url in refused[:3]:  # a start's webhook too, and then no execution either
            response = await client.post(
                "/api/agents",
                json={"agent_type": "steps-3", "input": {"prompt": "x"}, "webhook": {"url": url}},
                headers=alice.headers,
            )
            assert response.status_code == 422, (url, response.text)
    assert (await client.get("/api/webhooks", headers=alice.headers)).json() == []
    assert (await client.get("/api/agents", headers=alice.headers)).json()["total"] == 0


async def test_a_private_address_is_refused_at_delivery_when_workers_do_not_allow_it(
    make_settings, settings, alice, run_worker
):
    assert not settings.outbound_webhooks.allow_private_networks
    async with receiving() as receiver, api_client(allowing(make_settings)) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        await run_worker(settings)
        await run_worker(settings)
        [delivery] = await deliveries(http, alice, subscription["id"])
    assert receiver.requests == []
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("refused")
    assert attempt["next_attempt_at"] is None


async def test_a_start_webhook_is_told_of_that_execution_only_and_filters_apply(
    make_settings, alice, run_worker
):
    settings = allowing(make_settings)
    async with receiving() as receiver, api_client(settings) as http:
        failures_only = await subscribe(http, alice, receiver.url + "failed", ["failed"])
        response = await http.post(
            "/api/agents",
            json={
                "agent_type": "steps-3",
                "input": {"prompt": "tell me"},
                "webhook": {"url": receiver.url + "own", "events": ["completed"]},
            },
            headers=alice.headers,
        )
        assert response.status_code == 201, response.text
        execution = response.json()
        own = execution["webhook"]
        assert own["execution_id"] == execution["id"]
        assert own["events"] == ["completed"]
        assert own["secret"].startswith("whsec_")
        assert own["secret"] != failures_only["secret"]
        other = await start(http, alice, "steps-3")
        await run_worker(settings)
        await run_worker(settings)

        shown = (await http.get(f"/api/agents/{execution['id']}", headers=alice.headers)).json()
        assert shown["status"] == "completed"
        assert "secret" not in str(shown)
        assert (await http.get(f"/api/agents/{other['id']}", headers=alice.headers)).json()[
            "status"
        ] == "completed"
        assert await deliveries(http, alice, failures_only["id"]) == []
        [delivery] = await deliveries(http, alice, own["id"])

    [request] = receiver.requests
    assert request.path == "/own"
    verified(request, own["secret"])
    with pytest.raises(SignatureError):
        verified(request, failures_only["secret"])
    assert request.json["data"]["id"] == execution["id"]
    assert delivery["status"] == "delivered"


async def test_others_cannot_see_or_delete_a_subscription_and_get_never_shows_the_secret(
    make_settings, alice, bob
):
    async with api_client(allowing(make_settings)) as client:
        await others_cannot_see_or_delete(client, alice, bob)


async def others_cannot_see_or_delete(client: httpx.AsyncClient, alice: Account, bob: Account):
    created = await subscribe(client, alice, "http://127.0.0.1:9/hooks", ["completed"])
    path = f"/api/webhooks/{created['id']}"
    assert (await client.get(f"{path}/deliveries", headers=bob.headers)).status_code == 404
    assert (await client.delete(path, headers=bob.headers)).status_code == 404
    assert (await client.get("/api/webhooks", headers=bob.headers)).json() == []

    listed = (await client.get("/api/webhooks", headers=alice.headers)).json()
    assert [s["id"] for s in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert created["secret"] not in str(listed)
    page = await client.get(f"{path}/deliveries", headers=alice.headers)
    assert created["secret"] not in page.text

    assert (await client.delete(path, headers=alice.headers)).status_code == 204
    assert (await client.get(f"{path}/deliveries", headers=alice.headers)).status_code == 404
    assert (await client.delete(path, headers=alice.headers)).status_code == 404


async def test_only_the_first_kilobyte_of_a_response_body_is_stored(
    make_settings, alice, run_worker
):
    settings = allowing(make_settings)
    large = bytes(ord("a") + i % 26 for i in range(3 * 1024))
    async with receiving(Reply(200, large)) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        await run_worker(settings)
        [delivery] = await deliveries(http, alice, subscription["id"])
    assert len(receiver.requests) == 1
    [attempt] = delivery["attempts"]
    assert attempt["response_excerpt"] == large[:1024].decode()


async def test_a_binary_response_body_is_recorded_and_the_delivery_completes(
    make_settings, alice, run_worker
):
    # PostgreSQL text cannot hold NUL: the excerpt must not keep it, or the attempt (and the
    # delivery's state) would never be written and the sweep would send it again and again.
    settings = allowing(make_settings)
    binary = b"\x00\x01\xffok\x00"
    async with receiving(Reply(200, binary)) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        await run_worker(settings)
        [delivery] = await deliveries(http, alice, subscription["id"])
    assert len(receiver.requests) == 1
    assert delivery["status"] == "delivered"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200
    assert "ok" in attempt["response_excerpt"]


async def test_no_transaction_is_held_while_the_receiver_answers_and_a_duplicate_job_skips(
    make_settings, alice, run_worker, db, redis
):
    settings = allowing(make_settings, timeout_seconds=5)
    async with receiving(Reply(delay=1.0)) as receiver, api_client(settings) as http:
        subscription = await subscribe(http, alice, receiver.url)
        await start(http, alice, "steps-3")
        worker = asyncio.create_task(run_worker(settings))
        for _ in range(300):
            if receiver.requests:
                break
            await asyncio.sleep(0.01)
        [delivery] = await deliveries(http, alice, subscription["id"])
        async with db.connect() as conn:
            idle_in_transaction = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
                )
            )
        async with httpx.AsyncClient() as client:
            duplicate = await attempt_delivery(db, redis, client, settings, delivery["id"])
        await worker
        [delivery] = await deliveries(http, alice, subscription["id"])
    assert idle_in_transaction == 0  # the claim committed before the POST
    assert duplicate == "not pending"  # in flight: the claim moved its next attempt on
    assert len(receiver.requests) == 1
    assert delivery["status"] == "delivered"
    assert [a["number"] for a in delivery["attempts"]] == [1]
