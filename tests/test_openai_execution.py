"""A whole execution against a local server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

from app.agents.spec import AgentTypeSpec
from tests.fixtures.api import api_client, run_to_end
from tests.fixtures.openai_server import error_body, fake_openai, fake_openai_server, tool_call

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
