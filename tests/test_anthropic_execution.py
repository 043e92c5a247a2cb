"""A whole execution of an ``anthropic`` agent type against a local server speaking the
Anthropic Messages protocol."""

from __future__ import annotations

from app.agents.spec import AgentTypeSpec
from tests.fixtures.anthropic_server import fake_anthropic, fake_anthropic_server, text, tool_use
from tests.fixtures.api import run_to_end

__all__ = ["fake_anthropic", "fake_anthropic_server"]


async def test_execution_runs_tool_calls_through_the_anthropic_protocol(
    make_settings, run_worker, alice, fake_anthropic, monkeypatch, settings
):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-secret")
    spec = AgentTypeSpec(
        provider="anthropic", base_url=fake_anthropic.base_url, model="claude-test",
        api_key_env="TEST_ANTHROPIC_KEY", capabilities=["files"], max_retries=1,
    )  # fmt: skip
    assert spec.base_url == fake_anthropic.base_url
    fake_anthropic.enqueue_message(
        tool_use("write_file", {"path": "a.txt", "content": "hi"}),
        stop_reason="tool_use", input_tokens=20, output_tokens=7,
    )  # fmt: skip
    fake_anthropic.enqueue_message(
        text("Done."), stop_reason="end_turn", input_tokens=30, output_tokens=4
    )
    body = await run_to_end(
        make_settings(agent_types={"claude": spec}), alice.headers, "claude", run_worker
    )
    assert body["status"] == "completed", body
    assert body["output"] == {"response": "Done."}
    assert body["usage"] == {"input_tokens": 50, "output_tokens": 11}
    assert (settings.workspace_base / body["id"] / "a.txt").read_text() == "hi"
    first, second = (request.json for request in fake_anthropic.requests)
    assert fake_anthropic.requests[0].headers["x-api-key"] == "sk-ant-secret"
    assert first["model"] == "claude-test"
    assert first["system"]
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"


def test_anthropic_types_default_to_anthropic_settings():
    spec = AgentTypeSpec(provider="anthropic")
    assert (spec.base_url, spec.api_key_env) == ("https://api.anthropic.com", "ANTHROPIC_API_KEY")
