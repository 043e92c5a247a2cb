"""Building agents from specs, and the API-key check."""

from pathlib import Path

import httpx
import pytest

from app.agents.ask_user import AskUser
from app.agents.bash_tool import Bash
from app.agents.demo import DEMO_AGENT
from app.agents.drivers.openai import OpenAIChatDriver
from app.agents.drivers.scripted import ScriptedDriver
from app.agents.errors import AgentError, MissingApiKey
from app.agents.registry import build_agent, check_agent_type
from app.agents.spec import AgentTypeSpec, Capability
from app.agents.task_tools import TaskPlan


@pytest.mark.parametrize("environ", [{}, {"MY_KEY": ""}])
async def test_missing_key_is_reported_by_name(tmp_path: Path, environ: dict[str, str]) -> None:
    spec = AgentTypeSpec(provider="openai", api_key_env="MY_KEY")

    with pytest.raises(MissingApiKey, match="MY_KEY") as raised:
        check_agent_type(spec, environ)
    async with httpx.AsyncClient() as http:
        with pytest.raises(MissingApiKey):
            build_agent(spec, workspace=tmp_path, http=http, environ=environ)

    assert raised.value.error_type == "missing_api_key"
    assert raised.value.env_var == "MY_KEY"
    assert isinstance(raised.value, AgentError)


@pytest.mark.parametrize(
    "spec",
    [
        AgentTypeSpec(provider="openai", api_key_env=None, base_url="http://127.0.0.1:1/v1"),
        # The scripted provider never needs a key, whatever api_key_env says.
        AgentTypeSpec(provider="scripted", api_key_env="OPENAI_API_KEY"),
        DEMO_AGENT,
    ],
)
def test_no_key_needed(spec: AgentTypeSpec) -> None:
    check_agent_type(spec, {})


async def test_openai_agent(tmp_path: Path) -> None:
    spec = AgentTypeSpec(
        provider="openai",
        api_key_env="MY_KEY",
        base_url="http://example.invalid/v1/",
        model="m",
        request_timeout=7,
        max_retries=2,
    )

    async with httpx.AsyncClient() as http:
        agent = build_agent(spec, workspace=tmp_path / "ws", http=http, environ={"MY_KEY": "k"})

    assert isinstance(agent.driver, OpenAIChatDriver)
    assert agent.driver.url == "http://example.invalid/v1/chat/completions"
    assert (agent.driver.model, agent.driver.timeout, agent.driver.max_retries) == ("m", 7, 2)
    assert agent.tools == {}
    assert (tmp_path / "ws").is_dir()


async def test_scripted_agent_with_files(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        agent = build_agent(DEMO_AGENT, workspace=tmp_path / "a" / "b", http=http, environ={})

    assert isinstance(agent.driver, ScriptedDriver)
    assert list(agent.tools) == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search_files",
    ]
    assert (tmp_path / "a" / "b").is_dir()


async def test_every_capability(tmp_path: Path) -> None:
    spec = AgentTypeSpec(
        provider="scripted",
        capabilities=["subagents", "ask_user", "tasks", "bash", "files", "bash"],
        bash_timeout=12.5,
    )

    async with httpx.AsyncClient() as http:
        agent = build_agent(spec, workspace=tmp_path / "ws", http=http, environ={})

    assert list(agent.tools) == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search_files",
        "bash",
        "task_plan",
        "ask_user",
        "spawn_subagents",
    ]
    bash = agent.tools["bash"]
    assert isinstance(bash, Bash)
    assert bash.default_timeout == 12.5
    assert bash.workspace.root == (tmp_path / "ws").resolve()
    assert isinstance(agent.tools["task_plan"], TaskPlan)
    assert isinstance(agent.tools["ask_user"], AskUser)


@pytest.mark.parametrize(
    ("capabilities", "tools"),
    [
        ([], []),
        (["subagents"], ["spawn_subagents"]),
        (["bash"], ["bash"]),
        (["tasks", "ask_user"], ["task_plan", "ask_user"]),
    ],
)
async def test_capabilities_choose_the_tools(
    tmp_path: Path, capabilities: list[Capability], tools: list[str]
) -> None:
    spec = AgentTypeSpec(provider="scripted", capabilities=capabilities)

    async with httpx.AsyncClient() as http:
        agent = build_agent(spec, workspace=tmp_path, http=http, environ={})

    assert list(agent.tools) == tools


async def test_bash_timeout_defaults_to_a_minute(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        agent = build_agent(
            AgentTypeSpec(provider="scripted", capabilities=["bash"]),
            workspace=tmp_path,
            http=http,
            environ={},
        )

    bash = agent.tools["bash"]
    assert isinstance(bash, Bash)
    assert bash.default_timeout == 60


async def test_spawn_subagents_offers_the_named_subagents(tmp_path: Path) -> None:
    spec = AgentTypeSpec(
        provider="scripted", capabilities=["subagents"], subagents=["a", "missing"], max_depth=2
    )
    known = {
        "a": AgentTypeSpec(provider="scripted", description="Does A."),
        "b": AgentTypeSpec(provider="scripted", description="Does B."),
    }
    async with httpx.AsyncClient() as http:
        agent = build_agent(
            spec, workspace=tmp_path, http=http, environ={}, depth=2, subagents=known
        )
    tool = agent.tools["spawn_subagents"]
    assert "Subagents: a: Does A." in tool.spec().description
    assert "b:" not in tool.spec().description
    # At depth 2 of 2 it may not nest further: the model is told so.
    result = await tool.invoke({"tasks": [{"subagent": "a", "prompt": "x"}]})
    assert result.startswith("error: subagents may nest at most 2 levels")
