"""The embedded Redis is shared: it outlives the process that started it while others use it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import ROOT

_USE_REDIS = (
    "import sys; from pathlib import Path; from app.embedded import start_redis; "
    "print(start_redis(Path(sys.argv[1])), flush=True); sys.stdin.read()"
)


def _user(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """A process that starts or joins the embedded Redis, and exits when its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", _USE_REDIS, str(data_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def _leave(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(30) == 0


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return bool(client.ping())
    except (RedisConnectionError, FileNotFoundError):
        return False
    finally:
        client.close()


def test_the_embedded_redis_stops_with_the_last_process_using_it(tmp_path):
    data_dir = tmp_path / "data"
    first, url = _user(data_dir)
    second, joined = _user(data_dir)
    try:
        assert joined == url
        redis.Redis.from_url(url).set("kept", "yes")
        _leave(first)  # the one that started it
        assert _answers(url)
        _leave(second)
        for _ in range(100):
            if not _answers(url):
                break
            time.sleep(0.05)
        assert not _answers(url)
        # Started again on the same data directory, it still has what was written.
        third, again = _user(data_dir)
        try:
            assert redis.Redis.from_url(again).get("kept") == b"yes"
        finally:
            _leave(third)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
