"""``GET /api/agent-types`` and the tool names each capability gives."""

from __future__ import annotations

import httpx
import pytest

from app.agents.registry import build_agent, offered_tools
from app.agents.spec import CAPABILITY_TOOLS, AgentTypeSpec
from tests.fixtures.api import api_client


async def test_agent_types_lists_what_a_user_may_start(alice, make_settings):
    settings = make_settings(
        agent_types={
            "keyed": AgentTypeSpec(
                api_key_env="AGENTS_TEST_MISSING_KEY", description="needs a key"
            ),
            "narrow": AgentTypeSpec(
                provider="scripted", capabilities=["files", "tasks"], tools=["read_file"]
            ),
        }
    )
    async with api_client(settings) as http:
        anonymous = await http.get("/api/agent-types")
        response = await http.get("/api/agent-types", headers=alice.headers)

    assert anonymous.status_code == 401
    assert response.status_code == 200
    types = {item["name"]: item for item in response.json()["items"]}
    assert list(types) == sorted(types)
    assert {"code-assistant", "research", "code-review", "demo"} <= types.keys()
    assert types["keyed"]["available"] is False
    assert "AGENTS_TEST_MISSING_KEY" in types["keyed"]["unavailable"]
    assert types["narrow"]["tools"] == ["read_file"]
    assert types["narrow"]["available"] is True
    assistant = types["code-assistant"]
    assert assistant["capabilities"] == ["bash", "files", "tasks"]
    assert assistant["queue"] == "agents-default"
    assert assistant["max_steps"] == 50
    assert "base_url" not in assistant
    assert "api_key_env" not in assistant


@pytest.mark.parametrize("capability", sorted(CAPABILITY_TOOLS))
async def test_each_capability_gives_the_tools_it_is_documented_to(capability, tmp_path):
    spec = AgentTypeSpec(provider="scripted", capabilities=[capability])
    async with httpx.AsyncClient() as http:
        agent = build_agent(spec, workspace=tmp_path, http=http, environ={})

    assert sorted(agent.tools) == sorted(CAPABILITY_TOOLS[capability])
    assert offered_tools(spec) == list(agent.tools)
