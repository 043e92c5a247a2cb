"""Signed webhooks in (``POST /webhooks/{name}``): an ``event`` endpoint wakes waiting executions,
a ``start`` endpoint starts an agent; replays are answered as the first time and change nothing;
bad input writes nothing. Real API, PostgreSQL, Redis and workers; the last test runs the
service as ``make run`` does, in real processes."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.config import Settings
from app.errors import PROBLEM_CONTENT_TYPE
from app.webhooks.signatures import sign_github, sign_standard
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.processes import free_port, one_worker, service_env
from tests.fixtures.users import Account, make_account

Sessions = async_sessionmaker[AsyncSession]

SECRET_ENV = "TEST_WEBHOOK_SECRET"
OLD_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
NEW_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
UNKNOWN_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
GITHUB_SECRET = "a plain GitHub secret"

EVENT = {"event_type": "ci.finished", "payload": {"conclusion": "success", "run": 7}}
PULL_REQUEST = {
    "action": "opened",
    "number": 12,
    "pull_request": {"title": "Fix the flaky scheduler test", "number": 12},
}


def waiting_type() -> AgentTypeSpec:
    """Waits for ``ci.finished``, then answers with what the wait gave it."""
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["events"],
        script=[
            ScriptedTurn(
                tool_calls=[
                    ScriptedToolCall(name="wait_for_event", arguments={"event_type": "ci.finished"})
                ]
            ),
            ScriptedTurn(content="Got: {last_tool_result}"),
        ],
    )


def prompt_type() -> AgentTypeSpec:
    """Answers with its prompt."""
    return AgentTypeSpec(
        provider="scripted", api_key_env=None, script=[ScriptedTurn(content="Prompt was: {prompt}")]
    )


def event_endpoint(**overrides: Any) -> dict[str, Any]:
    return {"secret_env": SECRET_ENV, "user": "alice@example.com", "action": "event", **overrides}


def github_endpoint(**overrides: Any) -> dict[str, Any]:
    return {
        "secret_env": SECRET_ENV,
        "user": "alice@example.com",
        "action": "start",
        "signature": "github",
        "agent_type": "reviewer",
        "prompt_pointer": "/pull_request/title",
        **overrides,
    }


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def standard_headers(
    secret: str, body: bytes, *, message_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers signing ``body`` (a fresh message id and now by default)."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, message_id, timestamp, body),
    }


def github_headers(
    secret: str, body: bytes, *, event: str = "pull_request", delivery: str | None = None
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-github-event": event,
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-hub-signature-256": sign_github(secret, body),
    }


async def count_rows(sessions: Sessions, table: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


async def webhook_messages(sessions: Sessions) -> list[tuple[str, str, int, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT endpoint, message_id, status_code, response FROM webhook_messages")
        )
        return [tuple(row) for row in rows]


async def event_signals(sessions: Sessions) -> list[tuple[str, str, bool]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT execution_id, signal_type, processed FROM agent_signals ORDER BY id")
        )
        return [(str(row[0]), row[1], row[2]) for row in rows]


async def executions(sessions: Sessions) -> list[tuple[str, str, str, Any]]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT id, agent_type, status, input FROM agent_executions ORDER BY created_at")
        )
        return [(str(row[0]), row[1], row[2], row[3]) for row in rows]


async def read(http: httpx.AsyncClient, account: Account, execution_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/agents/{execution_id}", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def start_waiter(
    http: httpx.AsyncClient, account: Account, settings: Settings, run_worker: Callable[..., Any]
) -> str:
    """An execution of ``waiter`` parked ``awaiting_event``; its id."""
    created = await start(http, account, "waiter")
    await run_worker(settings)
    assert (await read(http, account, created["id"]))["status"] == "awaiting_event"
    return str(created["id"])


async def test_signed_event_wakes_the_waiting_execution_once_and_replays_change_nothing(
    alice, sessions, make_settings, run_worker, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, f"{OLD_SECRET}, {NEW_SECRET}")
    settings = make_settings(
        agent_types={"waiter": waiting_type()}, webhooks={"ci": event_endpoint()}
    )
    body = encode(EVENT)
    # Signed with the second of the two secrets: the one a rotation just introduced.
    headers = standard_headers(NEW_SECRET, body)
    async with api_client(settings) as http:
        execution_id = await start_waiter(http, alice, settings, run_worker)
        first = await http.post("/webhooks/ci", content=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json() == {
            "triggered_count": 1,
            "execution_ids": [execution_id],
            "kept_event_id": None,
        }
        replayed = await http.post("/webhooks/ci", content=body, headers=headers)
        # A sender's retry: the same id, signed again later with the other secret.
        retried = await http.post(
            "/webhooks/ci",
            content=body,
            headers=standard_headers(
                OLD_SECRET, body, message_id=headers["webhook-id"], timestamp=int(time.time()) + 1
            ),
        )
        for again in (replayed, retried):
            assert (again.status_code, again.json()) == (200, first.json())
        await run_worker(settings)
        done = await read(http, alice, execution_id)
    assert done["status"] == "completed"
    # The model's turn after the wake saw the payload as the tool's result.
    assert '"conclusion": "success"' in done["output"]["response"]
    assert '"run": 7' in done["output"]["response"]
    assert await event_signals(sessions) == [(execution_id, "event", True)]
    assert await count_rows(sessions, "agent_events") == 0
    assert await webhook_messages(sessions) == [("ci", headers["webhook-id"], 200, first.json())]


def bad_requests() -> dict[str, tuple[int, str, bytes, dict[str, str]]]:
    """Requests that must be refused, by name: (the status they get, path, body, headers).

    Signed when called: built at collection time, a valid timestamp could be stale by the time
    the test runs."""
    body = encode(EVENT)
    now = int(time.time())
    unsigned = {"content-type": "application/json"}
    # Each body but the malformed ones is an event the waiter would take, were it accepted.
    cases = {
        "wrong-signature": (401, "/webhooks/ci", body, standard_headers(UNKNOWN_SECRET, body)),
        "signature-of-another-body": (
            401,
            "/webhooks/ci",
            body,
            {
                **standard_headers(NEW_SECRET, body),
                "webhook-signature": standard_headers(NEW_SECRET, b"{}")["webhook-signature"],
            },
        ),
        "no-webhook-headers": (401, "/webhooks/ci", body, unsigned),
        "no-signature-header": (
            401,
            "/webhooks/ci",
            body,
            {
                k: v
                for k, v in standard_headers(NEW_SECRET, body).items()
                if k != "webhook-signature"
            },
        ),
        "stale-timestamp": (
            401,
            "/webhooks/ci",
            body,
            standard_headers(NEW_SECRET, body, timestamp=now - 6 * 60),
        ),
        "future-timestamp": (
            401,
            "/webhooks/ci",
            body,
            standard_headers(NEW_SECRET, body, timestamp=now + 6 * 60),
        ),
        "unknown-endpoint": (404, "/webhooks/nope", body, standard_headers(NEW_SECRET, body)),
        "body-over-the-limit": (
            413,
            "/webhooks/ci",
            big := encode({**EVENT, "payload": {"log": "x" * 100}}),
            standard_headers(NEW_SECRET, big),
        ),
        "malformed-json": (
            400,
            "/webhooks/ci",
            bad := b'{"event_type": "ci.finished", ',
            standard_headers(NEW_SECRET, bad),
        ),
        "nan-is-not-json": (
            400,
            "/webhooks/ci",
            nan := b'{"event_type": "ci.finished", "payload": NaN}',
            standard_headers(NEW_SECRET, nan),
        ),
        "message-id-longer-than-storable": (
            400,
            "/webhooks/ci",
            body,
            standard_headers(NEW_SECRET, body, message_id="m" * 201),
        ),
        "json-that-is-not-an-event": (
            422,
            "/webhooks/ci",
            other := encode({"type": "ci.finished", "payload": {}}),
            standard_headers(NEW_SECRET, other),
        ),
    }
    return cases


@pytest.mark.parametrize("case", list(bad_requests()))
async def test_refused_webhook_writes_nothing_and_wakes_nothing(
    case, alice, sessions, make_settings, run_worker, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, NEW_SECRET)
    settings = make_settings(
        agent_types={"waiter": waiting_type()},
        webhooks={"ci": event_endpoint(max_body_bytes=100)},
    )
    assert len(encode(EVENT)) <= 100  # the well-formed events fit; only the big one does not
    async with api_client(settings) as http:
        execution_id = await start_waiter(http, alice, settings, run_worker)
        before = await read(http, alice, execution_id)
        status, path, body, headers = bad_requests()[case]
        response = await http.post(path, content=body, headers=headers)
        after = await read(http, alice, execution_id)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["status"] == status
    assert "www-authenticate" not in response.headers
    assert after["status"] == "awaiting_event"
    assert after["wait"] == before["wait"]
    assert after["updated_at"] == before["updated_at"]
    assert await webhook_messages(sessions) == []
    assert await count_rows(sessions, "agent_events") == 0
    assert await event_signals(sessions) == []


async def test_github_signed_start_endpoint_starts_an_agent_for_its_user(
    alice, sessions, make_settings, run_worker, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, GITHUB_SECRET)
    settings = make_settings(
        agent_types={"reviewer": prompt_type()}, webhooks={"github": github_endpoint()}
    )
    body = encode(PULL_REQUEST)
    headers = github_headers(GITHUB_SECRET, body)
    async with api_client(settings) as http:
        response = await http.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 201, response.text
        answer = response.json()
        assert set(answer) == {"execution_id", "status"}
        started = await read(http, alice, answer["execution_id"])
        assert started["status"] == answer["status"]
        assert started["agent_type"] == "reviewer"
        assert started["input"]["prompt"] == "Fix the flaky scheduler test"
        assert started["input"]["webhook"]["payload"] == PULL_REQUEST
        assert started["input"]["webhook"]["message_id"] == headers["x-github-delivery"]
        await run_worker(settings)
        done = await read(http, alice, answer["execution_id"])
    assert done["status"] == "completed"
    assert done["output"]["response"] == "Prompt was: Fix the flaky scheduler test"
    assert await webhook_messages(sessions) == [
        ("github", headers["x-github-delivery"], 201, answer)
    ]


async def test_github_ping_answers_pong_and_starts_nothing(
    alice, sessions, make_settings, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, GITHUB_SECRET)
    settings = make_settings(
        agent_types={"reviewer": prompt_type()}, webhooks={"github": github_endpoint()}
    )
    body = encode({"zen": "Keep it logically awesome.", "hook_id": 1})
    async with api_client(settings) as http:
        response = await http.post(
            "/webhooks/github",
            content=body,
            headers=github_headers(GITHUB_SECRET, body, event="ping"),
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"pong": True}
    assert await executions(sessions) == []


@pytest.mark.parametrize(
    ("body", "secret", "status"),
    [
        pytest.param(encode({"action": "opened"}), GITHUB_SECRET, 422, id="no-prompt-at-pointer"),
        pytest.param(encode(PULL_REQUEST), "another secret", 401, id="wrong-signature"),
    ],
)
async def test_github_delivery_that_cannot_start_an_agent_starts_nothing(
    body, secret, status, alice, sessions, make_settings, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, GITHUB_SECRET)
    settings = make_settings(
        agent_types={"reviewer": prompt_type()}, webhooks={"github": github_endpoint()}
    )
    async with api_client(settings) as http:
        response = await http.post(
            "/webhooks/github", content=body, headers=github_headers(secret, body)
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert await executions(sessions) == []
    assert await webhook_messages(sessions) == []


async def test_start_over_the_tier_limit_is_429_and_the_same_message_is_handled_later(
    sessions, make_settings, run_worker, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, NEW_SECRET)
    settings = make_settings(
        agent_types={"reviewer": prompt_type()},
        webhooks={
            "tickets": {
                "secret_env": SECRET_ENV,
                "user": "free@example.com",
                "action": "start",
                "agent_type": "reviewer",
            }
        },
    )
    free = await make_account(sessions, "free@example.com", tier="free")
    body = encode({"prompt": "Answer ticket 99"})
    headers = standard_headers(NEW_SECRET, body)
    async with api_client(settings) as http:
        busy = await start(http, free, "reviewer", "the one it may run")
        refused = await http.post("/webhooks/tickets", content=body, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert int(refused.headers["retry-after"]) > 0
        assert await webhook_messages(sessions) == []
        assert [e[0] for e in await executions(sessions)] == [busy["id"]]
        await run_worker(settings)
        assert (await read(http, free, busy["id"]))["status"] == "completed"
        # The sender retries the message it was refused: now it starts the agent.
        accepted = await http.post("/webhooks/tickets", content=body, headers=headers)
        assert accepted.status_code == 201, accepted.text
        await run_worker(settings)
        done = await read(http, free, accepted.json()["execution_id"])
    assert done["output"]["response"] == "Prompt was: Answer ticket 99"
    assert await webhook_messages(sessions) == [
        ("tickets", headers["webhook-id"], 201, accepted.json())
    ]


async def test_concurrent_deliveries_of_one_message_wake_the_waiter_once(
    alice, sessions, make_settings, run_worker, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, NEW_SECRET)
    settings = make_settings(
        agent_types={"waiter": waiting_type()}, webhooks={"ci": event_endpoint()}
    )
    body = encode(EVENT)
    headers = standard_headers(NEW_SECRET, body)
    async with api_client(settings) as http:
        execution_id = await start_waiter(http, alice, settings, run_worker)
        responses = await asyncio.gather(
            *(http.post("/webhooks/ci", content=body, headers=headers) for _ in range(2))
        )
        await run_worker(settings)
        done = await read(http, alice, execution_id)
    answers = [(r.status_code, r.json()) for r in responses]
    assert (
        answers
        == [(200, {"triggered_count": 1, "execution_ids": [execution_id], "kept_event_id": None})]
        * 2
    )
    assert await event_signals(sessions) == [(execution_id, "event", True)]
    assert await count_rows(sessions, "agent_events") == 0
    assert done["status"] == "completed"


async def test_concurrent_deliveries_of_one_message_start_one_agent(
    alice, sessions, make_settings, monkeypatch
):
    monkeypatch.setenv(SECRET_ENV, GITHUB_SECRET)
    settings = make_settings(
        agent_types={"reviewer": prompt_type()}, webhooks={"github": github_endpoint()}
    )
    body = encode(PULL_REQUEST)
    headers = github_headers(GITHUB_SECRET, body)
    async with api_client(settings) as http:
        responses = await asyncio.gather(
            *(http.post("/webhooks/github", content=body, headers=headers) for _ in range(2))
        )
    started = await executions(sessions)
    assert len(started) == 1
    answers = [(r.status_code, r.json()) for r in responses]
    assert answers == [(201, {"execution_id": started[0][0], "status": "pending"})] * 2


WAITER_TOML = f"""
[agent_types.waiter]
provider = "scripted"
api_key_env = ""
capabilities = ["events"]

[[agent_types.waiter.script]]
[[agent_types.waiter.script.tool_calls]]
name = "wait_for_event"
arguments = {{ event_type = "ci.finished" }}

[[agent_types.waiter.script]]
content = "Got: {{last_tool_result}}"

[webhooks.ci]
secret_env = "{SECRET_ENV}"
user = "alice@example.com"
action = "event"
"""


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def poll_status(
    http: httpx.AsyncClient, account: Account, execution_id: str, status: str, seconds: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = (
            await http.get(f"/api/agents/{execution_id}", headers=account.headers)
        ).json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        await asyncio.sleep(0.05)


async def test_webhook_wakes_a_wait_that_survived_losing_redis_in_real_processes(
    settings, tmp_path, alice, redis, sessions
):
    config = tmp_path / "agents.toml"
    config.write_text(WAITER_TOML)
    env = service_env(
        settings, tmp_path, AGENTS_CONFIG_FILE=str(config), **{SECRET_ENV: OLD_SECRET}
    )
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"{args[0]}-{len(processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args], env=env, stdout=log, stderr=log
            )
        processes.append(process)
        return process

    try:
        server = spawn("serve", "--port", str(port))
        worker = spawn(*one_worker(settings))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, (tmp_path / "serve-0.log").read_text()
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the server did not become ready")
            created = await http.post(
                "/api/agents",
                json={"agent_type": "waiter", "input": {"prompt": "wait for CI"}},
                headers=alice.headers,
            )
            assert created.status_code == 201, created.text
            execution_id = created.json()["id"]
            await poll_status(http, alice, execution_id, "awaiting_event")
            # The worker goes and Redis loses every job, deferred deadline and queue entry:
            # only PostgreSQL knows the execution waits.
            stop(worker)
            await redis.flushdb()
            spawn(*one_worker(settings))
            body = encode(EVENT)
            woke = await http.post(
                "/webhooks/ci", content=body, headers=standard_headers(OLD_SECRET, body)
            )
            assert woke.status_code == 200, woke.text
            assert woke.json()["execution_ids"] == [execution_id]
            done = await poll_status(http, alice, execution_id, "completed")
    finally:
        for process in processes:
            stop(process)
    assert '"run": 7' in done["output"]["response"]
    assert await event_signals(sessions) == [(execution_id, "event", True)]
