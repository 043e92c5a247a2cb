"""The ``bash`` tool: a shell command in the workspace, bounded in time, output and resources.

Commands run in the worker's :class:`~app.agents.sandbox.Sandbox` (bubblewrap unless the
operator turned it off), under hard resource limits. Every command also runs in a new session,
hence its own process group, so it and everything it starts can be killed together: on
timeout, when the awaiting task is cancelled (the engine stopping an execution, the step's
deadline) and through :func:`kill_workspace_processes`. The command gets a minimal environment
built from an allow-list, never the service's own: database URLs and API keys must not reach
model-written commands.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.agents.sandbox import Launch, Sandbox, SandboxSettings
from app.agents.tools import Tool, ToolContext, ToolError, ToolSpec
from app.agents.workspace import Workspace

DEFAULT_TIMEOUT_SECONDS = 60.0
MAX_TIMEOUT_SECONDS = 600.0
MAX_OUTPUT_CHARS = 30_000
# SIGTERM first, so commands can clean up; what still runs after this is SIGKILLed.
KILL_GRACE_SECONDS = 2.0
# Once the command has exited, how long output of processes it left running is still read.
DRAIN_SECONDS = 0.5
_POLL_SECONDS = 0.02
# How long bubblewrap may take to report its sandbox's PID 1 once the command has ended.
SANDBOX_REPORT_SECONDS = 2.0


class BashArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="The command, run with /bin/bash -c.")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description=f"Kill the command after this many seconds (at most {MAX_TIMEOUT_SECONDS:g}); "
        "the agent type's default if omitted.",
    )


def command_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command: an allow-list, never a copy of ``os.environ``.

    ``PATH``, ``LANG``, ``LC_ALL`` and ``TZ`` are taken from ``environ`` (the process
    environment by default) when set; ``HOME`` is ``home``; ``TERM`` is ``dumb`` so tools
    do not decorate their output with colours meant for a terminal.
    """
    source = os.environ if environ is None else environ
    env = {
        "PATH": source.get("PATH") or os.defpath,
        "HOME": str(home),
        "LANG": source.get("LANG") or "C.UTF-8",
        "TERM": "dumb",
    }
    for name in ("LC_ALL", "TZ"):
        if source.get(name):
            env[name] = source[name]
    return env


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process of it is left (0 only checks)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id now belongs to another user's processes
        return False
    return True


async def terminate_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM process group ``pgid``, allow ``grace`` seconds, then SIGKILL what is left.

    The SIGKILL is sent even when waiting is itself cancelled.
    """
    gone = False
    try:
        if not _signal_group(pgid, signal.SIGTERM):
            gone = True
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            if not _signal_group(pgid, 0):
                gone = True
                return
    finally:
        if not gone:
            _signal_group(pgid, signal.SIGKILL)


class ProcessRegistry:
    """The process groups of bash commands, per owner (an execution), that may still be running.

    A group stays registered after its command returns while processes it started in the
    background are still alive, so they can be killed when the execution ends. Groups whose
    processes are all gone are forgotten whenever a new one is added.
    """

    def __init__(self) -> None:
        self._groups: dict[str, set[int]] = {}

    def add(self, owner: str, pgid: int) -> None:
        self._prune()
        self._groups.setdefault(owner, set()).add(pgid)

    def discard(self, owner: str, pgid: int) -> None:
        groups = self._groups.get(owner)
        if groups is not None:
            groups.discard(pgid)
            if not groups:
                del self._groups[owner]

    def running(self, owner: str) -> list[int]:
        """The registered groups of ``owner`` that still have a process."""
        return sorted(pgid for pgid in self._groups.get(owner, ()) if _signal_group(pgid, 0))

    async def kill_all(self, owner: str, grace: float = KILL_GRACE_SECONDS) -> int:
        """Terminate every group of ``owner``; the number that still had a process."""
        pgids = self.running(owner)
        self._groups.pop(owner, None)
        await asyncio.gather(*(terminate_group(pgid, grace) for pgid in pgids))
        return len(pgids)

    def _prune(self) -> None:
        for owner, groups in list(self._groups.items()):
            for pgid in [pgid for pgid in groups if not _signal_group(pgid, 0)]:
                self.discard(owner, pgid)


PROCESSES = ProcessRegistry()
"""The registry every bash tool uses unless given its own."""


async def kill_processes(owner: str, grace: float = KILL_GRACE_SECONDS) -> int:
    """Kill every process the bash tools of ``owner`` (an execution id) started that is still
    running.

    For the engine when an execution's job ends; returns the number of process groups that
    still had a process. Executions sharing a workspace do not kill each other's commands.
    """
    return await PROCESSES.kill_all(owner, grace)


class _CappedOutput:
    """Decoded command output, keeping only its first and last characters beyond a cap."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = ""
        self.tail = ""
        self.total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> None:
        self._add(self._decoder.decode(data))

    def _add(self, text: str) -> None:
        self.total += len(text)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += text[:room]
            text = text[room:]
        if text:
            self.tail = (self.tail + text)[-self.tail_limit :] if self.tail_limit else ""

    def text(self) -> str:
        self._add(self._decoder.decode(b"", final=True))
        omitted = self.total - len(self.head) - len(self.tail)
        text = self.head
        if omitted:
            text += f"\n[... {omitted} characters omitted ...]\n"
        # NUL cannot be stored in PostgreSQL text or JSONB.
        return (text + self.tail).replace("\x00", "\ufffd")


class _OutputProtocol(asyncio.Protocol):
    def __init__(self, output: _CappedOutput, closed: asyncio.Future[None]) -> None:
        self.output = output
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        self.output.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


_OUTPUT = (
    "stdout and stderr come back together, followed by the exit code; long output keeps "
    f"its first and last {MAX_OUTPUT_CHARS // 2} characters. There is no stdin. After "
    "timeout_seconds the command and every process it started are killed."
)
SANDBOXED_DESCRIPTION = (
    "Run a shell command with /bin/bash -c in a sandbox, in the workspace directory "
    "/workspace (also HOME). " + _OUTPUT + " Only /workspace is writable and persists; /tmp "
    "is small and private to the command; the rest of the system is read-only. Processes "
    "left running in the background are killed when the command exits. CPU time, memory, "
    "processes, file size and open files are limited."
)
NETWORK_OFF = " There is no network access."
UNCONFINED_DESCRIPTION = (
    "Run a shell command with /bin/bash -c in the workspace directory (also HOME). "
    + _OUTPUT
    + " Processes left running in the background keep running, but their later output is "
    "not shown: redirect it to a file (cmd > log 2>&1 &)."
)
UNCONFINED = Sandbox(SandboxSettings(mode="off"), None)
"""Commands run as the worker's user, under the resource limits only (tests, ``mode = off``)."""


async def _end_sandbox(launch: Launch, sandbox_pid: asyncio.Task[int | None]) -> None:
    """Make sure nothing of a sandboxed command survives it: kill the sandbox's PID 1 from
    outside (a process inside cannot stop that, whatever it did to bubblewrap)."""
    try:
        async with asyncio.timeout(SANDBOX_REPORT_SECONDS):
            await asyncio.shield(sandbox_pid)
    except TimeoutError:
        sandbox_pid.cancel()
    finally:
        launch.kill_sandbox()
        launch.close()


class Bash(Tool):
    name = "bash"
    description = UNCONFINED_DESCRIPTION
    Args = BashArgs

    def __init__(
        self,
        workspace: Workspace,
        default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        max_timeout: float = MAX_TIMEOUT_SECONDS,
        max_output_chars: int = MAX_OUTPUT_CHARS,
        kill_grace: float = KILL_GRACE_SECONDS,
        processes: ProcessRegistry = PROCESSES,
        sandbox: Sandbox = UNCONFINED,
        network: bool = False,
        owner: str | None = None,
    ) -> None:
        """``owner`` names whose commands these are, for :func:`kill_processes` (default:
        the workspace's path)."""
        sandbox.check_usable()
        sandbox.prepare(workspace.root)
        self.sandbox = sandbox
        self.network = network
        self.workspace = workspace
        self.owner = owner or str(workspace.root)
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.max_output_chars = max_output_chars
        self.kill_grace = kill_grace
        self.processes = processes

    def spec(self) -> ToolSpec:
        spec = super().spec()
        if not self.sandbox.is_confined:
            return spec
        description = SANDBOXED_DESCRIPTION + ("" if self.network else NETWORK_OFF)
        return ToolSpec(name=spec.name, description=description, parameters=spec.parameters)

    async def kill_all(self) -> int:
        """Kill every process still running that a bash command started in this workspace."""
        return await self.processes.kill_all(self.owner, self.kill_grace)

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, BashArgs)  # invoke() validated against Args
        if "\x00" in args.command:
            raise ToolError("the command contains a NUL character")
        timeout = min(args.timeout_seconds or self.default_timeout, self.max_timeout)
        root = self.workspace.root
        # One pipe for stdout and stderr keeps them interleaved as written.
        read_fd, write_fd = os.pipe()
        launch: Launch | None = None
        try:
            launch = self.sandbox.launch(
                args.command, root, network=self.network, environ=command_environment(root)
            )
            process = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                **launch.options(),
            )
        except BaseException as exc:
            os.close(read_fd)
            if launch is not None:
                launch.close()
            if isinstance(exc, OSError):
                raise ToolError(f"cannot run bash: {exc.strerror or type(exc).__name__}") from exc
            raise
        finally:
            os.close(write_fd)
        launch.started()
        sandbox_pid = asyncio.create_task(launch.sandbox_pid())
        try:
            return await self._collect(process, read_fd, timeout)
        finally:
            await _end_sandbox(launch, sandbox_pid)

    async def _collect(
        self, process: asyncio.subprocess.Process, read_fd: int, timeout: float
    ) -> str:
        """Read the command's output until it ends; the tool's result."""
        pgid = process.pid  # a session leader's pid is its process group id
        self.processes.add(self.owner, pgid)
        output = _CappedOutput(self.max_output_chars)
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        pipe = os.fdopen(read_fd, "rb", buffering=0)  # the transport closes it
        transport: asyncio.ReadTransport | None = None
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: _OutputProtocol(output, closed), pipe
            )
            status, killed = await self._wait(process, closed, timeout)
        except BaseException:
            # Cancelled: the engine stops the execution, or the step's deadline passed.
            # Nothing the command started may outlive it.
            await terminate_group(pgid, self.kill_grace)
            self.processes.discard(self.owner, pgid)
            raise
        finally:
            if transport is None:
                pipe.close()
            else:
                transport.close()
        # Killed groups may leave zombies (orphans whose reaper is slow), dead all the same.
        if killed or not _signal_group(pgid, 0):
            self.processes.discard(self.owner, pgid)
        text = output.text()
        if text and not text.endswith("\n"):
            text += "\n"
        if not closed.done():
            text += (
                "[processes still running in the background hold the output open; "
                "what they write later is not shown]\n"
            )
        return text + status

    async def _wait(
        self, process: asyncio.subprocess.Process, closed: asyncio.Future[None], timeout: float
    ) -> tuple[str, bool]:
        """Wait for the command: the status line ending the result, and whether the command
        was killed for running too long."""
        try:
            async with asyncio.timeout(timeout) as deadline:
                returncode = await process.wait()
        except TimeoutError:
            if not deadline.expired():
                raise
            await terminate_group(process.pid, self.kill_grace)
            await process.wait()
            await asyncio.wait([closed], timeout=DRAIN_SECONDS)
            status = (
                f"timed out after {timeout:g} s; the command and every process it started "
                "were killed"
            )
            return status, True
        # The command's own output is in the pipe already; processes it left running in the
        # background may keep the pipe open, so they are read only briefly.
        await asyncio.wait([closed], timeout=DRAIN_SECONDS)
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = str(-returncode)
            return f"killed by signal {name}", False
        return f"exit code: {returncode}", False
