"""A whole execution against a local server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.agents.spec import AgentTypeSpec
from tests.fixtures.api import api_client, run_to_end, start_execution
from tests.fixtures.local_server import serve_locally
from tests.fixtures.openai_server import (
    chat_completion,
    error_body,
    fake_openai,
    fake_openai_server,
    tool_call,
)
from tests.fixtures.users import make_account

__all__ = ["fake_openai", "fake_openai_server"]


def openai_type(base_url: str) -> AgentTypeSpec:
    return AgentTypeSpec(
        provider="openai",
        base_url=base_url,
        model="fake-model",
        api_key_env="TEST_OPENAI_KEY",
        capabilities=["files"],
        max_retries=1,
    )


async def run(make_settings, run_worker, account, fake, monkeypatch) -> dict:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-secret-test-key")
    settings = make_settings(agent_types={"remote": openai_type(fake.base_url)})
    return await run_to_end(settings, account.headers, "remote", run_worker, "write hi to a.txt")


async def test_execution_runs_tool_calls_through_the_openai_protocol(
    make_settings, run_worker, alice, fake_openai, monkeypatch, settings
):
    fake_openai.enqueue_completion(
        tool_calls=[tool_call("write_file", {"path": "a.txt", "content": "hi"})],
        prompt_tokens=20,
        completion_tokens=7,
    )
    fake_openai.enqueue(429, error_body("slow down"), headers={"Retry-After": "0"})
    fake_openai.enqueue_completion("I wrote hi to a.txt.", prompt_tokens=30, completion_tokens=4)
    body = await run(make_settings, run_worker, alice, fake_openai, monkeypatch)
    assert body["status"] == "completed", body
    assert body["output"] == {"response": "I wrote hi to a.txt."}
    assert body["usage"] == {"input_tokens": 50, "output_tokens": 11}
    assert body["token_usage"] == 61
    assert len(fake_openai.requests) == 3
    second = fake_openai.requests[2].json
    assert second["messages"][-1]["role"] == "tool"
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-secret-test-key"
    assert (settings.workspace_base / body["id"] / "a.txt").read_text() == "hi"


async def test_provider_error_fails_the_execution_without_leaking_the_key(
    make_settings, run_worker, alice, fake_openai, monkeypatch
):
    # Some servers echo the key they were sent; it must not reach the execution's error.
    fake_openai.enqueue(401, error_body("invalid api key sk-secret-test-key"))
    body = await run(make_settings, run_worker, alice, fake_openai, monkeypatch)
    assert body["status"] == "failed"
    assert body["error"]["type"] == "provider_error"
    assert "401" in body["error"]["message"]
    assert "sk-secret-test-key" not in str(body)


async def test_type_without_its_key_is_refused_at_start(make_settings, alice, monkeypatch):
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    settings = make_settings(agent_types={"remote": openai_type("http://127.0.0.1:9/v1")})
    async with api_client(settings) as http:
        response = await http.post(
            "/api/agents",
            json={"agent_type": "remote", "input": {"prompt": "x"}},
            headers=alice.headers,
        )
    assert response.status_code == 422
    assert response.json()["missing_setting"] == "TEST_OPENAI_KEY"


@pytest.mark.parametrize(("per_host", "most_at_once"), [(2, 2), (0, 6)])
async def test_a_worker_holds_at_most_the_configured_connections_to_a_provider(
    make_settings, run_worker, sessions, per_host, most_at_once
):
    in_flight = 0
    peak = 0

    async def slow_completion(request: Request) -> JSONResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.3)
        in_flight -= 1
        return JSONResponse(chat_completion("done"))

    app = Starlette(routes=[Route("/v1/chat/completions", slow_completion, methods=["POST"])])
    account = await make_account(sessions, "many@example.com", tier="enterprise")
    async with serve_locally(app, lifespan="off") as base:
        spec = openai_type(f"{base}/v1").model_copy(update={"api_key_env": None})
        settings = make_settings(
            agent_types={"remote": spec}, worker={"http_max_connections_per_host": per_host}
        )
        async with api_client(settings) as http:
            ids = [(await start_execution(http, account.headers, "remote"))["id"] for _ in range(6)]
            await run_worker(settings)
            statuses = [
                (await http.get(f"/api/agents/{i}", headers=account.headers)).json()["status"]
                for i in ids
            ]
    assert statuses == ["completed"] * 6
    assert peak == most_at_once
