"""The bash sandbox, attacked the way a prompt-injected model would attack it.

Each attack is first shown to work against an unconfined command where that makes sense, so
the test cannot pass for the wrong reason. Without a working bubblewrap on the host these
tests skip, unless ``AGENTS_REQUIRE_SANDBOX`` is set (CI sets it).
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from app import undumpable
from app.agents.bash_tool import UNCONFINED, Bash
from app.agents.file_tools import WriteFile
from app.agents.sandbox import (
    Sandbox,
    SandboxLimits,
    SandboxSettings,
    SandboxStartError,
    SandboxUnavailable,
    find_bwrap,
    open_sandbox,
    probe,
)
from app.agents.workspace import Workspace

SECRET = "postgresql://service:hunter2@db/agents"


def _sandbox_problem() -> str | None:
    bwrap = find_bwrap(None)
    if bwrap is None:
        return "no bwrap binary"
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        return probe(SandboxSettings(), bwrap, base)
    finally:
        shutil.rmtree(base)


_PROBLEM = _sandbox_problem()
needs_sandbox = pytest.mark.skipif(
    _PROBLEM is not None and not os.environ.get("AGENTS_REQUIRE_SANDBOX"),
    reason=f"bubblewrap cannot start here: {_PROBLEM}",
)


BASE = Path(tempfile.gettempdir())


def sandbox(**settings: object) -> Sandbox:
    return open_sandbox(SandboxSettings.model_validate({"mode": "bwrap", **settings}), BASE)


@pytest.fixture
def confined() -> Sandbox:
    return sandbox()


@pytest.fixture
def bash(root: Path, confined: Sandbox) -> Bash:
    return Bash(Workspace(root), default_timeout=10, kill_grace=0.2, sandbox=confined)


def processes_running(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if marker in " ".join(process.info["cmdline"] or []):
            found.append(process)
    return found


async def none_running(marker: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while processes_running(marker):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


pytestmark = needs_sandbox


def run_in_worker(root: Path, command: str, *, confined: bool) -> str:
    """Run ``command`` in a fresh process whose environment holds a secret, as a worker's
    holds the database URL: with the bash tool in the sandbox, or (to show what the attack
    does without one) as a plain child process of the worker's user."""
    if confined:
        run = f"""
        import asyncio
        from pathlib import Path
        from app.agents.bash_tool import Bash
        from app.agents.sandbox import SandboxSettings, open_sandbox
        from app.agents.workspace import Workspace

        sandbox = open_sandbox(SandboxSettings(), Path({str(BASE)!r}))
        bash = Bash(Workspace(Path({str(root)!r})), sandbox=sandbox)
        print(asyncio.run(bash.invoke({{"command": {command!r}}})))
        """
    else:
        run = f"""
        import subprocess
        subprocess.run(["/bin/bash", "-c", {command!r}], cwd={str(root)!r})
        """
    env = {**os.environ, "AGENTS_TEST_SECRET": SECRET}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(run)],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return result.stdout.decode()


async def test_the_workers_environment_is_out_of_reach(root: Path) -> None:
    attack = "tr '\\0' '\\n' < /proc/$PPID/environ | grep SECRET; cat /proc/*/environ; env"

    unconfined = await asyncio.to_thread(run_in_worker, root, attack, confined=False)
    confined = await asyncio.to_thread(run_in_worker, root, attack, confined=True)

    assert SECRET in unconfined  # the attack works without the sandbox
    assert SECRET not in confined
    assert "AGENTS_TEST_SECRET" not in confined


async def test_other_workspaces_and_the_host_are_invisible(root: Path, bash: Bash) -> None:
    other = root.parent / "other-execution"
    other.mkdir()
    (other / "secret").write_text(SECRET)

    result = await bash.invoke(
        {"command": f"cat ../other-execution/secret; cat {other}/secret; ls /; pwd"}
    )

    assert SECRET not in result
    assert result.splitlines()[-2] == "/workspace"
    listing = set(result.splitlines())
    assert "root" not in listing
    assert "home" not in listing


async def test_the_system_is_read_only_and_tmp_is_private_and_small(root: Path) -> None:
    small = Bash(Workspace(root), sandbox=sandbox(limits={"tmp_size_mb": 4}))

    result = await small.invoke(
        {
            "command": "touch /usr/x /etc/x /x /dev/x 2>&1 | wc -l; "
            "head -c 8000000 /dev/zero > /tmp/big; echo tmp=$?; echo kept > here"
        }
    )

    assert result.splitlines()[0] == "4"  # four refusals
    assert "No space left on device" in result
    assert "tmp=1" in result
    assert (root / "here").read_text() == "kept\n"


async def test_no_network_by_default_and_only_for_allowed_types(
    root: Path, confined: Sandbox
) -> None:
    connected = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    command = f"echo hi > /dev/tcp/127.0.0.1/{port} && echo reached"
    async with server:
        offline = await Bash(Workspace(root), sandbox=confined).invoke({"command": command})
        assert "reached" not in offline
        assert not connected.is_set()

        online = Bash(Workspace(root), sandbox=confined, network=True)
        assert "reached" in await online.invoke({"command": command})
        assert connected.is_set()
    assert "no network access" in Bash(Workspace(root), sandbox=confined).spec().description
    assert "network" not in online.spec().description


async def test_setsid_escapes_die_with_the_command(bash: Bash) -> None:
    marker = "sleep 987.25"
    result = await bash.invoke({"command": f"({marker} &); (setsid {marker} &); echo started"})

    assert result == "started\nexit code: 0"
    assert await none_running(marker, within=2.0)


async def test_nothing_outlives_a_worker_killed_with_sigkill(root: Path, tmp_path: Path) -> None:
    marker, command = "sleep 986.75", "sleep 985.25"
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from app.agents.bash_tool import Bash
        from app.agents.sandbox import SandboxSettings, open_sandbox
        from app.agents.workspace import Workspace

        sandbox = open_sandbox(SandboxSettings(), Path({str(BASE)!r}))
        bash = Bash(Workspace(Path({str(root)!r})), sandbox=sandbox)
        asyncio.run(bash.invoke({{"command": "(setsid {marker} &); touch started; {command}"}}))
        """
    )
    worker = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not (root / "started").exists():
            assert time.monotonic() < deadline, "the command did not start"
            await asyncio.sleep(0.05)
        assert processes_running(marker)
        assert processes_running(command)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    assert await none_running(marker)
    assert await none_running(command)


async def test_a_fork_bomb_hits_the_process_limit(root: Path) -> None:
    limited = Bash(
        Workspace(root),
        default_timeout=3,
        kill_grace=0.2,
        sandbox=sandbox(limits={"processes": 32}),
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    result = await limited.invoke({"command": "bomb() { bomb | bomb & }; bomb; sleep 2; echo done"})
    elapsed = time.monotonic() - started
    ticker.cancel()

    assert "Resource temporarily unavailable" in result
    assert elapsed < 10
    assert ticks >= elapsed / 0.05 * 0.5  # the worker's event loop kept running
    assert await none_running("bomb", within=2.0)


async def test_a_huge_file_hits_the_file_size_limit(root: Path) -> None:
    limited = Bash(Workspace(root), sandbox=sandbox(limits={"file_size_mb": 10}))

    result = await limited.invoke(
        {"command": "dd if=/dev/zero of=big bs=1M count=10240 status=none; echo dd=$?"}
    )

    assert "File size limit exceeded" in result
    assert (root / "big").stat().st_size <= 10 * 1024 * 1024


async def test_memory_cpu_and_open_files_are_limited(root: Path) -> None:
    limits = {"memory_mb": 256, "cpu_seconds": 1, "open_files": 64}
    limited = Bash(Workspace(root), default_timeout=10, sandbox=sandbox(limits=limits))

    memory = await limited.invoke(
        {"command": "python3 -c 'bytearray(1024 ** 3)' 2>&1 | tail -1; ulimit -n"}
    )
    started = time.monotonic()
    cpu = await limited.invoke({"command": "bash -c 'while :; do :; done'; echo status=$?"})
    spun = time.monotonic() - started
    raise_limit = await limited.invoke({"command": "ulimit -u 100000 && ulimit -t 1000"})

    assert memory.splitlines()[:2] == ["MemoryError", "64"]
    # SIGXCPU at the limit (152), or SIGKILL (137) when the hard limit is reached first.
    assert cpu.splitlines()[-2] in {"status=152", "status=137"}
    assert spun < 5
    assert not raise_limit.endswith("exit code: 0")


async def test_no_descriptor_of_the_worker_leaks_in(bash: Bash) -> None:
    """bubblewrap gets three pipes of its own (its options, the seccomp filter, its report);
    the command's shell holds only stdin, stdout and stderr."""
    # A child lists the shell's descriptors (``; true`` keeps the shell from exec'ing it).
    result = await bash.invoke({"command": "ls /proc/$$/fd; true"})

    assert result.split()[:-3] == ["0", "1", "2"]


async def test_files_written_by_the_file_tools_stay_writable_in_the_sandbox(
    root: Path, bash: Bash
) -> None:
    write = WriteFile(Workspace(root))  # before any command ran
    await write.invoke({"path": "src/deep/notes.txt", "content": "one\n"})

    result = await bash.invoke(
        {"command": "echo two >> src/deep/notes.txt && touch src/deep/new && echo ok"}
    )

    assert result == "ok\nexit code: 0"
    assert (root / "src/deep/notes.txt").read_text() == "one\ntwo\n"


def test_an_unusable_sandbox_refuses_bash_unless_allowed(root: Path) -> None:
    broken = {"bwrap_path": "/bin/false"}

    refused = open_sandbox(SandboxSettings.model_validate(broken), BASE)
    allowed = open_sandbox(
        SandboxSettings.model_validate({**broken, "allow_unsandboxed_bash": True}), BASE
    )

    assert not refused.is_confined
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed_bash"):
        Bash(Workspace(root), sandbox=refused)
    assert not allowed.is_confined
    Bash(Workspace(root), sandbox=allowed)
    with pytest.raises(SandboxStartError, match='mode = "bwrap"'):
        open_sandbox(SandboxSettings.model_validate({**broken, "mode": "bwrap"}), BASE)
    off = SandboxSettings.model_validate({**broken, "mode": "off"})
    assert open_sandbox(off, BASE) == Sandbox(off, None)


async def test_unconfined_commands_still_get_resource_limits(root: Path) -> None:
    limited = Sandbox(SandboxSettings(mode="off", limits=SandboxLimits(file_size_mb=1)), None)

    result = await Bash(Workspace(root), sandbox=limited).invoke(
        {"command": "head -c 5000000 /dev/zero > big"}
    )

    assert "File size limit exceeded" in result
    assert UNCONFINED.bwrap is None


SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(
    os.geteuid() != 0 or SYSTEM_PYTHON is None,
    reason="needs root and a system python3 to run two processes as another user",
)
def test_a_non_dumpable_worker_hides_its_environment_from_its_own_user() -> None:
    """A process of the worker's own user (an unconfined command) cannot read a non-dumpable
    worker's environment; without the protection it can."""
    nobody: dict[str, Any] = {"user": 65534, "group": 65534, "extra_groups": []}
    # The module, copied where that user can read it (it uses the standard library only).
    shared = Path(tempfile.mkdtemp())
    shared.chmod(0o755)
    shutil.copy(undumpable.__file__, shared / "undumpable.py")
    env = {"AGENTS_TEST_SECRET": SECRET, "PYTHONPATH": str(shared), "PATH": os.defpath}

    def read_environ(protect: bool) -> str:
        body = "import undumpable; undumpable.make_undumpable()\n" if protect else ""
        body += "import time; print('up', flush=True); time.sleep(30)"
        worker = subprocess.Popen(
            [str(SYSTEM_PYTHON), "-c", body], env=env, stdout=subprocess.PIPE, cwd="/", **nobody
        )
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline() == b"up\n"
            attacker = subprocess.run(
                ["cat", f"/proc/{worker.pid}/environ"], capture_output=True, check=False, **nobody
            )
            return attacker.stdout.decode(errors="replace")
        finally:
            worker.kill()
            worker.wait()

    try:
        assert SECRET in read_environ(protect=False)
        assert SECRET not in read_environ(protect=True)
    finally:
        shutil.rmtree(shared)


def test_make_undumpable_marks_this_process() -> None:
    undumpable.make_undumpable()
    assert not undumpable.is_dumpable()


SYSCALLS = """
import ctypes, errno, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(*args):
    result = libc.syscall(*args)
    return errno.errorcode.get(ctypes.get_errno(), "0") if result == -1 else "ok"
print("ptrace", call(101, 16, 1, 0, 0))             # PTRACE_ATTACH to PID 1
print("process_vm_readv", call(310, 1, 0, 0, 0, 0, 0))
print("io_uring_setup", call(425, 1, 0))
print("unshare", call(272, 0x10000000))              # CLONE_NEWUSER
print("clone3", call(435, 0, 0))
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("thread ok")
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86_64")
async def test_escape_system_calls_are_refused(bash: Bash) -> None:
    """Tracing PID 1 (to keep the sandbox alive after its command), reading another process's
    memory, io_uring and new user namespaces are refused; ordinary programs still run."""
    result = await bash.invoke({"command": f"python3 -c '{SYSCALLS}'; unshare -U true; echo $?"})

    lines = result.splitlines()
    assert lines[:6] == [
        "ptrace EPERM",
        "process_vm_readv EPERM",
        "io_uring_setup EPERM",
        "unshare EPERM",
        "clone3 ENOSYS",
        "thread ok",
    ]
    assert lines[-2] != "0"  # unshare(1) failed too


async def test_the_sandbox_is_killed_from_outside_whatever_happens_inside(
    root: Path, confined: Sandbox
) -> None:
    """Killing the sandbox's PID 1 ends every process in it, however they were started."""
    marker = "sleep 985.5"
    launch = confined.launch(f"(setsid {marker} &); {marker}", root, environ={})
    process = await asyncio.create_subprocess_exec(*launch.argv, **launch.options())
    launch.started()
    try:
        pid = await launch.sandbox_pid()
        assert pid is not None
        deadline = time.monotonic() + 5
        while len(processes_running(marker)) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        launch.kill_sandbox()

        assert await none_running(marker)
        assert await asyncio.wait_for(process.wait(), 5) != 0
    finally:
        launch.kill_sandbox()
        launch.close()
