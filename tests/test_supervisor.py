"""``agents worker`` supervising its pools: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from app.config import Settings
from app.executions.liveness import WORKERS_KEY
from app.executions.models import Execution
from tests.conftest import scripted_type
from tests.fixtures.api import api_client
from tests.fixtures.executions import start, step_numbers
from tests.fixtures.metrics import parse_samples, value
from tests.fixtures.processes import agents, free_port, service_env, slow_type_config
from workers.runner import WorkerGroup
from workers.supervisor import PoolPlan, plan_pools, pool_size_each


def pools_toml(default: str) -> str:
    """Only the default queue's pool runs, with ``default`` as its settings."""
    return (
        f"\n[worker.pools.agents-default]\n{default}\n"
        "[worker.pools.agents-long]\nprocesses = 0\n"
        "[worker.pools.agents-priority]\nprocesses = 0\n"
    )


def supervise(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], env=env, stdout=out, stderr=out
        )


async def live_worker_pids(redis, count: int, supervisor: subprocess.Popen[bytes]) -> set[int]:
    """Wait until ``count`` worker processes have announced themselves; their pids."""
    for _ in range(600):
        assert supervisor.poll() is None
        entries = await redis.hgetall(WORKERS_KEY)
        pids = {json.loads(raw)["pid"] for raw in entries.values()}
        children = {child.pid for child in psutil.Process(supervisor.pid).children()}
        if len(pids & children) >= count:
            return pids & children
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} workers did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


async def test_a_killed_child_comes_back_and_sigterm_drains_every_child(
    settings, tmp_path, alice, sessions, redis, run_worker, make_settings
):
    config = slow_type_config(
        tmp_path, steps=8, delay=0.3, extra=pools_toml("processes = 2\nmax_jobs = 5")
    )
    port = free_port()
    env = service_env(
        settings,
        tmp_path,
        AGENTS_CONFIG_FILE=str(config),
        AGENTS_WORKER__HEARTBEAT_INTERVAL="0.2",
        AGENTS_METRICS__WORKER_LISTEN=f"127.0.0.1:{port}",
    )
    log = tmp_path / "supervisor.log"
    supervisor = supervise(env, log)
    try:
        first = await live_worker_pids(redis, 2, supervisor)
        victim = min(first)
        psutil.Process(victim).kill()
        for _ in range(400):
            children = {child.pid for child in psutil.Process(supervisor.pid).children()}
            if len(children) == 2 and victim not in children:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(log.read_text())
        text = log.read_text()
        assert f"(pid {victim}) exited with signal SIGKILL" in text
        assert "restarting in 1 s" in text
        await live_worker_pids(redis, 2, supervisor)

        own = make_settings(agent_types={"crashy": scripted_type(8, delay=0.3)})
        async with api_client(own) as http:
            created = await start(http, alice, "crashy")
        for _ in range(300):
            if len(await step_numbers(sessions, created["id"])) >= 2:
                break
            await asyncio.sleep(0.02)
        # The supervisor serves what its processes count, summed.
        async with httpx.AsyncClient() as http:
            scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        samples = parse_samples(scraped)
        assert value(samples, "agents_worker_executions_in_flight") == 1
        assert value(samples, "agents_step_duration_seconds_count", agent_type="crashy") >= 2
        workers = psutil.Process(supervisor.pid).children()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(15) == 0, log.read_text()
    finally:
        stop(supervisor)
    assert not any(worker.is_running() for worker in workers)
    # The running chunk stopped at a step boundary and was queued again: no sweep needed.
    done = await step_numbers(sessions, created["id"])
    assert 2 <= len(done) < 8
    # A burst worker runs only what is queued: the handed-over chunk is.
    await run_worker(own)
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_a_child_over_its_memory_cap_is_replaced_without_losing_or_repeating_a_step(
    settings, tmp_path, alice, sessions, redis, make_settings
):
    # Every process is over 1 MB: each hands its execution over after one heartbeat interval.
    config = slow_type_config(
        tmp_path, steps=6, delay=0.25, extra=pools_toml("processes = 1\nmax_memory_mb = 1")
    )
    env = service_env(
        settings,
        tmp_path,
        AGENTS_CONFIG_FILE=str(config),
        AGENTS_WORKER__HEARTBEAT_INTERVAL="0.4",
    )
    own = make_settings(agent_types={"crashy": scripted_type(6, delay=0.25)})
    async with api_client(own) as http:
        created = await start(http, alice, "crashy")
    log = tmp_path / "supervisor.log"
    supervisor = supervise(env, log)
    seen_workers = set()
    try:
        for _ in range(1200):
            async with sessions() as session:
                execution = await session.get(Execution, uuid.UUID(created["id"]))
            assert execution is not None
            if execution.worker_id:
                seen_workers.add(execution.worker_id)
            if execution.status == "completed":
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(log.read_text())
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(15)
        stop(supervisor)
    assert await step_numbers(sessions, created["id"]) == [1, 2, 3, 4, 5, 6]
    text = log.read_text()
    assert "over its max_memory_mb of 1" in text
    assert "stopped at its memory cap" in text
    # The execution moved between processes while it ran.
    assert len(seen_workers) >= 2, seen_workers


def test_pools_come_from_settings_and_unpooled_queues_join_the_default_pool(make_settings):
    settings: Settings = make_settings(
        agent_types={"gpu-agent": scripted_type(1).model_copy(update={"queue": "gpu"})},
        worker={"pools": {"agents-long": {"processes": 0}, "agents-priority": {"max_jobs": 7}}},
    )
    plans = {plan.name: plan for plan in plan_pools(settings)}
    assert set(plans) == {"agents-default", "agents-priority"}
    assert plans["agents-default"].queues == ("agents-default", "agents-long", "gpu")
    assert plans["agents-default"].max_memory_mb == 512
    assert plans["agents-priority"].timeout == 600
    assert plans["agents-priority"].argv()[3:] == [
        "worker",
        "--queue",
        "agents-priority",
        "--max-jobs",
        "7",
        "--timeout",
        "600",
        "--max-memory-mb",
        "512",
    ]
    assert PoolPlan("x", ("q",), 1).argv()[3:] == ["worker", "--queue", "q"]
    # 50 connections shared by 3 processes, at most db_pool_size (20) each; at least 5.
    assert pool_size_each(settings, list(plans.values())) == 16
    assert pool_size_each(settings, [PoolPlan("x", ("q",), 40)]) == 5


def test_worker_refuses_when_every_pool_is_off(settings, tmp_path):
    config = tmp_path / "agents.toml"
    config.write_text(
        "".join(f"[worker.pools.{name}]\nprocesses = 0\n" for name in settings.queue_names())
    )
    result = agents("worker", env=service_env(settings, tmp_path, AGENTS_CONFIG_FILE=str(config)))
    assert result.returncode == 2
    assert "no worker would run" in result.stderr


async def test_a_memory_cap_below_an_idle_worker_is_an_error_with_backoff(
    settings, tmp_path, redis
):
    config = slow_type_config(
        tmp_path, steps=1, delay=0, extra=pools_toml("processes = 1\nmax_memory_mb = 1")
    )
    env = service_env(
        settings, tmp_path, AGENTS_CONFIG_FILE=str(config), AGENTS_WORKER__HEARTBEAT_INTERVAL="0.2"
    )
    log = tmp_path / "supervisor.log"
    supervisor = supervise(env, log)
    try:
        for _ in range(300):
            if "restarting in" in log.read_text():
                break
            await asyncio.sleep(0.05)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(15) == 0
    finally:
        stop(supervisor)
    text = log.read_text()
    assert "before running anything, over its max_memory_mb of 1: raise max_memory_mb" in text
    assert "exited with code 1" in text
    assert "stopped at its memory cap" not in text


async def test_a_process_whose_queue_worker_dies_stops_to_be_restarted(settings, redis, caplog):
    # The long queue's key holds a string: arq's poll of it fails with WRONGTYPE.
    await redis.set("agents-long", "not a queue")
    group = WorkerGroup(settings, settings.queue_names())
    await asyncio.wait_for(group.run(handle_signals=False), 20)  # it stops by itself
    assert group.failed
    assert "the worker of queue agents-long died: stopping this process" in caplog.text
