"""Builds a runnable :class:`Agent` from an agent type spec and the provider API keys.

``environ`` maps the variable an ``api_key_env`` names to its key: ``Settings.provider_keys()``
in the service, a plain dict in tests. The agent runtime never reads ``os.environ`` for keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from app.agents.agent import Agent
from app.agents.ask_user import AskUser
from app.agents.bash_tool import UNCONFINED, Bash
from app.agents.drivers.anthropic import AnthropicDriver
from app.agents.drivers.base import Driver
from app.agents.drivers.clients import ModelClient
from app.agents.drivers.openai import OpenAIChatDriver
from app.agents.drivers.scripted import ScriptedDriver
from app.agents.errors import MissingApiKey
from app.agents.event_tools import WaitForEvent
from app.agents.file_tools import file_tools
from app.agents.sandbox import Sandbox
from app.agents.spec import CAPABILITY_TOOLS, AgentTypeSpec
from app.agents.subagents import SpawnSubagents
from app.agents.task_tools import TaskPlan
from app.agents.tools import Tool
from app.agents.workspace import Workspace


def check_agent_type(spec: AgentTypeSpec, environ: Mapping[str, str]) -> None:
    """Raise :class:`MissingApiKey` now if building the agent later would.

    Only the OpenAI provider uses a key, and only when ``api_key_env`` is set: a spec with
    ``api_key_env = None`` talks to a server that needs none (a local model, a test server).
    """
    _api_key(spec, environ)


def offered_tools(spec: AgentTypeSpec) -> list[str]:
    """The names of the tools an agent of ``spec`` is offered, in the order it gets them."""
    names = [name for capability in spec.capabilities for name in CAPABILITY_TOOLS[capability]]
    names = list(dict.fromkeys(names))
    return names if spec.tools is None else [name for name in names if name in spec.tools]


def build_agent(
    spec: AgentTypeSpec,
    *,
    workspace: Path,
    http: ModelClient,
    environ: Mapping[str, str],
    depth: int = 0,
    subagents: Mapping[str, AgentTypeSpec] | None = None,
    sandbox: Sandbox = UNCONFINED,
    network: bool = False,
    process_owner: str | None = None,
) -> Agent:
    """The agent for ``spec``, its file and bash tools (if any) working in ``workspace``.

    ``workspace`` is created if absent. Tools follow the capabilities: ``files`` (read_file,
    write_file, edit_file, list_files, search_files), ``bash``, ``tasks`` (task_plan) and
    ``ask_user``, ``subagents`` (spawn_subagents, offering the ``subagents`` specs that
    ``spec.subagents`` names; ``depth`` is this agent's nesting depth) and ``events``
    (wait_for_event); ``spec.tools``, if set, keeps only the tools it names. Bash commands
    run in ``sandbox``, with the network if ``network``, and belong to ``process_owner`` (see
    :func:`~app.agents.bash_tool.kill_processes`); a sandbox that refuses bash raises
    :class:`~app.agents.sandbox.SandboxUnavailable`.
    """
    driver: Driver
    if spec.provider == "scripted":
        driver = ScriptedDriver(spec.script)
    else:
        provider = AnthropicDriver if spec.provider == "anthropic" else OpenAIChatDriver
        driver = provider(
            http,
            base_url=spec.base_url,
            api_key=_api_key(spec, environ),
            model=spec.model,
            timeout=spec.request_timeout,
            max_retries=spec.max_retries,
        )
    workspace.mkdir(parents=True, exist_ok=True)
    root = Workspace(workspace)
    tools: list[Tool] = []
    if "files" in spec.capabilities:
        tools.extend(file_tools(root))
    if "bash" in spec.capabilities:
        tools.append(
            Bash(
                root,
                default_timeout=spec.bash_timeout,
                sandbox=sandbox,
                network=network,
                owner=process_owner,
            )
        )
    if "tasks" in spec.capabilities:
        tools.append(TaskPlan())
    if "ask_user" in spec.capabilities:
        tools.append(AskUser())
    if "subagents" in spec.capabilities:
        known = subagents or {}
        available = {name: known[name].description for name in spec.subagents if name in known}
        tools.append(SpawnSubagents(available, depth=depth, max_depth=spec.max_depth))
    if "events" in spec.capabilities:
        tools.append(WaitForEvent(spec.max_event_wait))
    if spec.tools is not None:
        tools = [tool for tool in tools if tool.name in spec.tools]
    return Agent(spec, driver, tools)


def _api_key(spec: AgentTypeSpec, environ: Mapping[str, str]) -> str | None:
    if spec.provider == "scripted" or spec.api_key_env is None:
        return None
    key = environ.get(spec.api_key_env, "")
    if not key:
        raise MissingApiKey(spec.api_key_env)
    return key
