"""Only ``agents dev`` (and the admin commands) start embedded servers: the service processes and
the app refuse to run without configured ones, and say why."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ServicesNotConfigured, Settings
from app.main import create_app
from tests.conftest import ROOT


def unconfigured_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment with no server URLs and no ``AGENTS_*`` settings but the data dir."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AGENTS_") and name not in ("DATABASE_URL", "REDIS_URL")
    }
    return {**env, "AGENTS_DATA_DIR": str(data_dir), **extra}


@pytest.mark.parametrize(
    ("argv", "extra", "message"),
    [
        (["serve"], {}, "DATABASE_URL and REDIS_URL are not set"),
        (["worker", "--processes", "2"], {}, "DATABASE_URL and REDIS_URL are not set"),
        (["serve"], {"DATABASE_URL": "postgresql://db.invalid/agents"}, "REDIS_URL is not set"),
        (["worker"], {"REDIS_URL": "redis://redis.invalid"}, "DATABASE_URL is not set"),
    ],
)
def test_serve_and_worker_refuse_to_start_without_server_urls(
    tmp_path: Path, argv: list[str], extra: dict[str, str], message: str
) -> None:
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=ROOT,
        env=unconfigured_env(data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert "'agents dev'" in line
    assert result.stdout == ""
    # No embedded PostgreSQL or Redis was started (nor its directory made) in the data dir.
    assert not data_dir.exists()


async def test_the_app_refuses_to_start_without_server_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "AGENTS_DATABASE_URL", "AGENTS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AGENTS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("AGENTS_DATA_DIR", str(tmp_path / "data"))
    for app in (create_app(Settings(redis_url="redis://redis.invalid")), create_app()):
        with pytest.raises(ServicesNotConfigured, match="DATABASE_URL"):
            async with app.router.lifespan_context(app):
                pass
    assert not (tmp_path / "data").exists()


def test_arq_job_lines_are_dropped_and_its_other_lines_kept() -> None:
    from app.cli import _without_job_lines

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.getLogger("arq.worker").makeRecord(
            "arq.worker", logging.INFO, __file__, 1, msg, args, None
        )

    # The formats arq uses (arq/worker.py).
    assert not _without_job_lines(record("%6.2fs → %s(%s)%s", 0.01, "abc:1", "", ""))
    assert not _without_job_lines(record("%6.2fs ← %s ● %s", 0.2, "abc:1", ""))
    assert _without_job_lines(record("%6.2fs ↻ %s retrying job in %0.2fs", 0.2, "abc:1", 5))
    assert _without_job_lines(record("Starting worker for %d functions: %s", 3, "a, b, c"))
