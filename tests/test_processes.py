"""The ``agents`` command as users run it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import httpx
import psutil
from arq.constants import in_progress_key_prefix
from sqlalchemy import select

from app.executions.models import Execution
from app.executions.recovery import sweep
from tests.conftest import scripted_type
from tests.fixtures.api import api_client
from tests.fixtures.executions import start, step_numbers
from tests.fixtures.processes import agents, one_worker, service_env, slow_type_config


async def test_create_user_and_token_commands(settings, tmp_path, client, clean_state):
    env = service_env(settings, tmp_path)
    created = agents("create-user", "--email", "Cli@Example.com", "--tier", "enterprise", env=env)
    assert created.returncode == 0, created.stderr
    assert "tier=enterprise" in created.stdout
    again = agents("create-user", "--email", "cli@example.com", env=env)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    token = agents("create-token", "--email", "cli@example.com", "--name", "laptop", env=env)
    assert token.returncode == 0, token.stderr
    value = token.stdout.strip()
    response = await client.get("/api/agents", headers={"Authorization": f"Bearer {value}"})
    assert response.status_code == 200
    missing = agents("create-token", "--email", "nobody@example.com", env=env)
    assert missing.returncode != 0


async def test_invalid_setting_stops_the_command_naming_the_key(settings, tmp_path):
    env = service_env(settings, tmp_path, AGENTS_LIMITS__CHUNK_SIZE="-1")
    result = agents("migrate", env=env)
    assert result.returncode != 0
    assert "invalid setting limits.chunk_size" in result.stderr


async def test_work_survives_a_worker_killed_mid_step(
    settings, tmp_path, client, alice, sessions, db, redis, run_worker, make_settings
):
    config = slow_type_config(tmp_path, steps=6, delay=0.2)
    env = service_env(
        settings,
        tmp_path,
        AGENTS_CONFIG_FILE=str(config),
        AGENTS_WORKER__HEARTBEAT_INTERVAL="0.2",
        AGENTS_WORKER__POLL_DELAY="0.01",
    )
    crash_settings = make_settings(
        agent_types={"crashy": scripted_type(6, delay=0.2)}, worker={"stale_after": 0.5}
    )
    async with api_client(crash_settings) as http:
        created = await start(http, alice, "crashy")
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", *one_worker(settings)], env=env)
    try:
        for _ in range(300):
            if len(await step_numbers(sessions, created["id"])) >= 2:
                break
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # arq would retry the dead worker's job once its in-progress marker expires (after the job
    # timeout); drop the marker now so the burst worker below can finish the queue.
    for key in await redis.keys(in_progress_key_prefix + "*"):
        await redis.delete(key)
    done_before = await step_numbers(sessions, created["id"])
    assert 2 <= len(done_before) < 6
    await asyncio.sleep(0.7)  # the heartbeat goes stale
    report = await sweep(db, redis, crash_settings)
    assert report.recovered == 1
    await run_worker(crash_settings)
    async with sessions() as session:
        execution = await session.scalar(
            select(Execution).where(Execution.id == uuid.UUID(created["id"]))
        )
    assert execution is not None
    assert execution.status == "completed"
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3, 4, 5, 6]


async def test_dev_command_serves_on_embedded_servers_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTS_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["AGENTS_DATA_DIR"] = str(tmp_path / "dev")
    env["AGENTS_WORKSPACE_BASE"] = str(tmp_path / "dev" / "workspaces")
    port = 18765 + os.getpid() % 1000
    dev = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
                await asyncio.sleep(0.1)
            token = (tmp_path / "dev" / "demo-token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            created = (
                await http.post(
                    "/api/agents",
                    json={"agent_type": "demo", "input": {"prompt": "hi dev"}},
                    headers=headers,
                )
            ).json()
            for _ in range(100):
                body = (await http.get(f"/api/agents/{created['id']}", headers=headers)).json()
                if body["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
            assert body["output"] == {"response": "The note in my workspace says: hi dev"}
        started = {p.pid for p in psutil.Process(dev.pid).children(recursive=True)}
        dev.send_signal(signal.SIGINT)
        assert dev.wait(30) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    data = str(tmp_path / "dev")
    survivors = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.info["pid"] in started or any(data in part for part in (p.info["cmdline"] or []))
    ]
    assert survivors == []


async def test_stopping_a_worker_hands_its_execution_over_at_once(
    settings, tmp_path, alice, sessions, run_worker, make_settings
):
    config = slow_type_config(tmp_path, steps=4, delay=0.3)
    env = service_env(settings, tmp_path, AGENTS_CONFIG_FILE=str(config))
    own_settings = make_settings(agent_types={"crashy": scripted_type(4, delay=0.3)})
    async with api_client(own_settings) as http:
        created = await start(http, alice, "crashy")
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", *one_worker(settings)], env=env)
    try:
        for _ in range(300):
            if len(await step_numbers(sessions, created["id"])) >= 1:
                break
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert len(await step_numbers(sessions, created["id"])) < 4
    # No sweep, no stale heartbeat: the next worker simply continues.
    await run_worker(own_settings)
    async with sessions() as session:
        execution = await session.get(Execution, uuid.UUID(created["id"]))
    assert execution is not None
    assert execution.status == "completed"
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3, 4]
