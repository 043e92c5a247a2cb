"""The bash tool, with real processes: output, limits, and that nothing it starts survives."""

import asyncio
import os
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest

from app.agents.agent import Agent
from app.agents.bash_tool import (
    MAX_OUTPUT_CHARS,
    MAX_TIMEOUT_SECONDS,
    Bash,
    ProcessRegistry,
    command_environment,
    kill_processes,
)
from app.agents.drivers.scripted import ScriptedDriver
from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.agents.workspace import Workspace


@pytest.fixture
def processes() -> ProcessRegistry:
    return ProcessRegistry()


@pytest.fixture
def bash(root: Path, processes: ProcessRegistry) -> Bash:
    return Bash(Workspace(root), default_timeout=10, kill_grace=0.2, processes=processes)


def is_dead(pid: int) -> bool:
    """Gone, or a zombie: dead, merely not yet reaped by its (new) parent."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def all_dead(pids: Iterable[int], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not all(is_dead(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def read_pids(*files: Path) -> list[int]:
    return [int(line) for file in files for line in file.read_text().split()]


async def wait_for_file(path: Path, lines: int = 1, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not (path.exists() and len(path.read_text().split()) >= lines):
        assert time.monotonic() < deadline, f"{path} was not written"
        await asyncio.sleep(0.01)


# A command that starts a child (which ignores SIGTERM) and two grandchildren, each writing
# its pid down, then waits for ever.
SPAWNING = (
    "sleep 300 & echo $! >> pids; "
    "bash -c 'trap \"\" TERM; sleep 300 & echo $! >> pids; sleep 300 & echo $! >> pids; wait' & "
    "echo $! >> pids; "
    "wait"
)


async def test_exit_code_and_interleaved_output(bash: Bash) -> None:
    result = await bash.invoke({"command": "echo out; echo err >&2; echo more; exit 3"})

    assert result == "out\nerr\nmore\nexit code: 3"


async def test_success_without_output(bash: Bash) -> None:
    assert await bash.invoke({"command": "true"}) == "exit code: 0"


async def test_output_without_final_newline(bash: Bash) -> None:
    assert await bash.invoke({"command": "printf abc"}) == "abc\nexit code: 0"


async def test_stdin_is_empty(bash: Bash) -> None:
    assert await bash.invoke({"command": "cat; echo read"}) == "read\nexit code: 0"


async def test_runs_in_the_workspace(bash: Bash, root: Path) -> None:
    result = await bash.invoke({"command": "pwd; echo $HOME; echo hi > made.txt"})

    assert result == f"{root}\n{root}\nexit code: 0"
    assert (root / "made.txt").read_text() == "hi\n"


async def test_environment_does_not_leak_secrets(
    bash: Bash, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://user:db-secret@host/db",
        "REDIS_URL": "redis://:redis-secret@host",
        "OPENAI_API_KEY": "sk-openai-secret",
        "AGENTS_SECRET_SETTING": "agents-secret",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TZ", "UTC")

    result = await bash.invoke({"command": "env"})

    names = {line.split("=", 1)[0] for line in result.splitlines()[:-1]}
    assert names <= {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TZ", "PWD", "SHLVL", "_"}
    assert {"PATH", "HOME", "LANG", "TERM", "TZ"} <= names
    for name, value in secrets.items():
        assert name not in result
        assert value not in result
    assert f"HOME={root}\n" in result
    assert "TERM=dumb\n" in result
    assert "TZ=UTC\n" in result


def test_command_environment_is_an_allow_list(tmp_path: Path) -> None:
    environ = {"PATH": "/bin", "LC_ALL": "C", "OPENAI_API_KEY": "k", "HOME": "/root"}

    assert command_environment(tmp_path, environ) == {
        "PATH": "/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TERM": "dumb",
    }
    assert command_environment(tmp_path, {})["PATH"] == os.defpath


async def test_output_is_capped_keeping_head_and_tail(root: Path) -> None:
    bash = Bash(Workspace(root), max_output_chars=100)
    lines = "".join(f"line{i}\n" for i in range(1, 1001))

    result = await bash.invoke({"command": "seq -f 'line%g' 1 1000"})

    omitted = len(lines) - 100
    assert result == (
        f"{lines[:50]}\n[... {omitted} characters omitted ...]\n{lines[-50:]}exit code: 0"
    )


async def test_default_output_cap(bash: Bash) -> None:
    result = await bash.invoke({"command": "head -c 100000 /dev/zero | tr '\\0' x; echo; echo end"})

    assert MAX_OUTPUT_CHARS == 30_000
    head, marker, tail = result.split("\n", 2)
    assert head == "x" * 15_000
    assert marker == f"[... {100_005 - MAX_OUTPUT_CHARS} characters omitted ...]"
    assert tail == "x" * (15_000 - 5) + "\nend\nexit code: 0"


async def test_undecodable_bytes_and_nul_are_replaced(bash: Bash) -> None:
    result = await bash.invoke({"command": "printf 'a\\000b\\377c'"})

    assert result == "a\ufffdb\ufffdc\nexit code: 0"


async def test_timeout_kills_the_whole_process_group(bash: Bash, root: Path) -> None:
    started = time.monotonic()
    result = await bash.invoke({"command": f"echo started; {SPAWNING}", "timeout_seconds": 0.5})

    elapsed = time.monotonic() - started
    assert result == (
        "started\ntimed out after 0.5 s; the command and every process it started were killed"
    )
    # The timeout, the SIGTERM grace (the child ignores SIGTERM), then SIGKILL.
    assert 0.5 <= elapsed < 3
    pids = read_pids(root / "pids")
    assert len(pids) == 4
    assert await all_dead(pids)
    assert bash.processes.running(bash.owner) == []


async def test_default_timeout_comes_from_the_constructor(root: Path) -> None:
    bash = Bash(Workspace(root), default_timeout=0.3, kill_grace=0.1)

    result = await bash.invoke({"command": "sleep 30"})

    assert result == "timed out after 0.3 s; the command and every process it started were killed"


async def test_timeout_is_capped(root: Path) -> None:
    bash = Bash(Workspace(root), default_timeout=0.3, max_timeout=0.2, kill_grace=0.1)

    result = await bash.invoke({"command": "sleep 30", "timeout_seconds": 100})

    assert result.startswith("timed out after 0.2 s")
    assert MAX_TIMEOUT_SECONDS == 600


async def test_cancellation_kills_the_group_and_propagates(bash: Bash, root: Path) -> None:
    task = asyncio.create_task(bash.invoke({"command": SPAWNING}))
    await wait_for_file(root / "pids", lines=4)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await all_dead(read_pids(root / "pids"))
    assert bash.processes.running(bash.owner) == []


async def test_an_agent_step_deadline_kills_the_command(bash: Bash, root: Path) -> None:
    spec = AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        timeout=0.5,
        script=[
            ScriptedTurn(
                tool_calls=[ScriptedToolCall(name="bash", arguments={"command": SPAWNING})]
            )
        ],
    )
    agent = Agent(spec, ScriptedDriver(spec.script), [bash])
    state = agent.initial_state("go")

    records = [record async for record in agent.iterate(state)]

    assert records == []
    assert state.stop_reason == "timeout"
    assert await all_dead(read_pids(root / "pids"))


async def test_background_processes_outlive_the_call_until_killed(bash: Bash, root: Path) -> None:
    started = time.monotonic()
    result = await bash.invoke({"command": "sleep 300 > /dev/null 2>&1 & echo $!"})

    assert time.monotonic() - started < DRAIN_LIMIT
    pid_line, status = result.splitlines()
    pid = int(pid_line)
    assert status == "exit code: 0"
    assert not is_dead(pid)
    assert bash.processes.running(bash.owner) == [os.getpgid(pid)]

    assert await bash.kill_all() == 1

    assert await all_dead([pid])
    assert bash.processes.running(bash.owner) == []
    assert await bash.kill_all() == 0


# A command whose output pipe closes at once must not wait out the drain delay.
DRAIN_LIMIT = 0.4


async def test_background_process_holding_the_output(bash: Bash, root: Path) -> None:
    started = time.monotonic()
    result = await bash.invoke({"command": "echo hi; sleep 300 & echo $! > pid"})

    assert time.monotonic() - started < 2
    assert result == (
        "hi\n[processes still running in the background hold the output open; "
        "what they write later is not shown]\nexit code: 0"
    )
    pid = read_pids(root / "pid")[0]
    assert not is_dead(pid)
    await bash.kill_all()
    assert await all_dead([pid])


async def test_kill_all_stops_a_running_command(bash: Bash, root: Path) -> None:
    task = asyncio.create_task(bash.invoke({"command": "echo $$ > pid; exec sleep 300"}))
    await wait_for_file(root / "pid")

    assert await bash.kill_all() == 1

    assert await task == "killed by signal SIGTERM"


async def test_kill_processes_kills_only_its_owners(root: Path) -> None:
    # Two executions sharing a workspace (subagents with workspace = "parent"): ending one
    # kills its own commands, not the other's.
    first = Bash(Workspace(root), owner="first")
    second = Bash(Workspace(root), owner="second")
    await first.invoke({"command": "sleep 300 > /dev/null 2>&1 & echo $! > a"})
    await second.invoke({"command": "sleep 300 > /dev/null 2>&1 & echo $! > b"})
    [mine], [theirs] = read_pids(root / "a"), read_pids(root / "b")

    assert await kill_processes("first", grace=0.2) == 1

    assert await all_dead([mine])
    assert not is_dead(theirs)
    assert await kill_processes("second", grace=0.2) == 1
    assert await all_dead([theirs])
    assert await kill_processes("first") == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "error: invalid arguments for bash: command: Field required"),
        ({"command": ""}, "error: invalid arguments for bash: command: String should have"),
        ({"command": "true", "timeout_seconds": 0}, "error: invalid arguments for bash: timeout"),
        ({"command": "true", "cwd": "/"}, "error: invalid arguments for bash: cwd: Extra"),
        ({"command": "echo \x00"}, "error: the command contains a NUL character"),
    ],
)
async def test_invalid_arguments(bash: Bash, arguments: dict[str, object], message: str) -> None:
    assert (await bash.invoke(arguments)).startswith(message)


async def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    bash = Bash(Workspace(tmp_path / "gone"))

    assert await bash.invoke({"command": "true"}) == (
        "error: cannot run bash: No such file or directory"
    )


def test_spec_describes_arguments(bash: Bash) -> None:
    spec = bash.spec()

    assert spec.name == "bash"
    assert spec.parameters["required"] == ["command"]
    assert set(spec.parameters["properties"]) == {"command", "timeout_seconds"}
