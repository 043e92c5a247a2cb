"""The bash sandbox through the real API and worker: a model-written attack, and a worker where
the sandbox cannot start."""

from __future__ import annotations

import os

import pytest

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from tests.agents.test_sandbox import needs_sandbox
from tests.fixtures.api import api_client
from tests.fixtures.executions import start

ATTACK = (
    "tr '\\0' '\\n' < /proc/$PPID/environ | grep -c URL; "
    "cat ../*/secret 2>&1 | head -1; "
    "echo > /dev/tcp/127.0.0.1/5432 && echo database reachable; "
    "id -u"
)


def shell_type(command: str) -> AgentTypeSpec:
    """Runs ``command`` with bash, then answers with its output."""
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["bash", "files"],
        script=[
            ScriptedTurn(
                tool_calls=[ScriptedToolCall(name="bash", arguments={"command": command})]
            ),
            ScriptedTurn(content="{last_tool_result}"),
        ],
    )


@needs_sandbox
async def test_a_hostile_command_reaches_nothing_of_the_service(
    alice, make_settings, run_worker, monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(agent_types={"shell": shell_type(ATTACK)})
    settings.workspace_base.mkdir(parents=True)
    neighbour = settings.workspace_base / "another-execution"
    neighbour.mkdir()
    (neighbour / "secret").write_text("the neighbour's secret\n")
    async with api_client(settings) as http:
        created = await start(http, alice, "shell")
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()

    assert done["status"] == "completed", done
    output = done["output"]["response"]
    lines = output.splitlines()
    assert lines[0] == "0"  # no URL in any environment it can see
    assert "neighbour's secret" not in output
    assert "database reachable" not in output
    if os.geteuid() == 0:
        assert lines[-2] == "65534"  # not root, even for a root worker
    assert lines[-1] == "exit code: 0"


async def test_bash_is_refused_with_a_clear_error_when_the_sandbox_cannot_start(
    alice, make_settings, run_worker
):
    settings = make_settings(
        agent_types={"shell": shell_type("id")}, sandbox={"bwrap_path": "/bin/false"}
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "shell")
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()

    assert done["status"] == "failed"
    assert done["error"]["type"] == "sandbox_unavailable"
    assert "allow_unsandboxed_bash" in done["error"]["message"]


async def test_the_operator_may_allow_unsandboxed_bash(alice, make_settings, run_worker):
    settings = make_settings(
        agent_types={"shell": shell_type("echo ran")},
        sandbox={"bwrap_path": "/bin/false", "allow_unsandboxed_bash": True},
    )
    async with api_client(settings) as http:
        created = await start(http, alice, "shell")
        await run_worker(settings)
        done = (await http.get(f"/api/agents/{created['id']}", headers=alice.headers)).json()

    assert done["status"] == "completed"
    assert done["output"]["response"] == "ran\nexit code: 0"
