"""The engine against honest baselines, in one run: worker efficiency alone, with the same tuning.

    .venv/bin/python -m bench.drain [--executions N] [--steps K] [--jobs M]

(a) **raw arq**: M no-op jobs drained by one arq worker with the service's own ``[worker]``
    tuning (``poll_delay``, ``max_jobs``), not arq's defaults (whose 0.5 s poll is the bound);
(b) **hand-written**: N arq jobs of K durable steps on raw asyncpg (``bench.raw_worker``: per
    step an INSERT of a log row, an UPDATE with a ~2 KB JSON checkpoint, one PUBLISH), same
    tuning, a pool of ``worker.db_pool_size`` connections;
(c) **this service, drain mode**: N executions of the scripted ``bench`` type (K steps: K-1
    ``list_files`` calls, then an answer) created through the API while the worker is stopped,
    then one worker process drains them: no API work in the timed window.

Each drain is timed from the first job's (execution's) start to the last one's end; worker CPU
over the same window. Ratios: (c) executions/s to (b) executions/s, and to (a) jobs/s (one job
per execution: K fits in a chunk). Results: a table and ``bench/results/drain-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.baselines import run_baseline
from bench.harness import (
    ONE_WORKER,
    Children,
    asyncpg_dsn,
    prepare_servers,
    run_benchmark,
    start_service,
)
from bench.workload import AGENT_TYPE, bench_toml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--executions", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="K steps each (default 10)")
    parser.add_argument("--jobs", type=int, default=5000, help="M no-op jobs (default 5000)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the worker while it drains (raw stacks)"
    )
    return parser.parse_args(argv)


async def hand_written(
    children: Children, database_url: str, redis_url: str, options: argparse.Namespace, tuning: Any
) -> dict[str, Any]:
    from arq.connections import RedisSettings, create_pool

    from bench.raw_worker import SCHEMA

    db = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await db.execute(SCHEMA)
        await db.execute("TRUNCATE raw_executions, raw_logs")
        await db.executemany(
            "INSERT INTO raw_executions (id) VALUES ($1)",
            [(i,) for i in range(options.executions)],
        )
    finally:
        await db.close()
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        await pool.flushdb()
        for start in range(0, options.executions, 200):
            stop = min(start + 200, options.executions)
            await asyncio.gather(*(pool.enqueue_job("run_steps", i) for i in range(start, stop)))
    finally:
        await pool.aclose()
    argv = [
        sys.executable, "-m", "bench.raw_worker", "--redis-url", redis_url,
        "--database-url", asyncpg_dsn(database_url), "--steps", str(options.steps),
        "--poll-delay", str(tuning.poll_delay), "--max-jobs", str(tuning.max_jobs),
        "--pool-size", str(tuning.db_pool_size),
    ]  # fmt: skip
    process = children.start("raw-worker", argv, stdout_pipe=True)
    stdout, _ = await asyncio.to_thread(process.communicate, timeout=600)
    children.processes.pop("raw-worker", None)
    if process.returncode != 0:
        raise RuntimeError(f"raw worker failed; see {children.log_dir / 'raw-worker.log'}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def service_drain(
    children: Children, servers: Any, options: argparse.Namespace, workspace: Path
) -> dict[str, Any]:
    config = workspace / "bench.toml"
    config.write_text(bench_toml(options.steps, workspace / "workspaces"))
    os.environ["AGENTS_CONFIG_FILE"] = str(config)
    service = await start_service(children, servers)
    children.stop("worker")
    db = await asyncpg.connect(asyncpg_dsn(servers.database_url))
    try:
        headers = {"Authorization": f"Bearer {service.token}"}
        async with httpx.AsyncClient(
            base_url=service.base_url, headers=headers, timeout=60
        ) as client:
            numbers = iter(range(options.executions))

            async def poster() -> None:
                for _ in numbers:
                    body = {"agent_type": AGENT_TYPE, "input": {"prompt": "drain"}}
                    response = await client.post("/api/agents", json=body)
                    response.raise_for_status()

            await asyncio.gather(*(poster() for _ in range(20)))
        worker = children.start("worker", ONE_WORKER)
        process = psutil.Process(worker.pid)
        started = "SELECT count(*) FROM agent_executions WHERE started_at IS NOT NULL"
        while not await db.fetchval(started):  # noqa: ASYNC110 (another process's rows)
            await asyncio.sleep(0.02)
        cpu_start = sum(process.cpu_times()[:2])
        if options.profile:
            children.profile("worker")
        deadline = time.monotonic() + 600
        finished = 0
        while time.monotonic() < deadline:
            finished = await db.fetchval(
                "SELECT count(*) FROM agent_executions "
                "WHERE status IN ('completed', 'failed', 'cancelled')"
            )
            if finished >= options.executions:
                break
            await asyncio.sleep(0.05)
        cpu = sum(process.cpu_times()[:2]) - cpu_start
        if options.profile:
            children.stop_profile("worker")
        row = await db.fetchrow(
            "SELECT extract(epoch FROM max(completed_at) - min(started_at)) AS drain, "
            "count(*) FILTER (WHERE status = 'completed') AS completed, "
            "coalesce(sum(step_count), 0) AS steps FROM agent_executions"
        )
        assert row is not None
    finally:
        await db.close()
        await service.redis.aclose()
    drain = float(row["drain"])
    return {
        "executions": options.executions,
        "completed": row["completed"],
        "steps": row["steps"],
        "drain_seconds": drain,
        "executions_per_second": row["completed"] / drain,
        "cpu_seconds": cpu,
        "cpu_ms_per_step": 1000 * cpu / max(1, row["steps"]),
    }


async def run(options: argparse.Namespace, children: Children, workspace: Path) -> dict[str, Any]:
    from app.config_sections import WorkerTuning

    tuning = WorkerTuning()
    servers = await prepare_servers()
    tuned = ["--poll-delay", str(tuning.poll_delay), "--max-jobs", str(tuning.max_jobs)]
    print(f"(a) {options.jobs} no-op arq jobs, the service's tuning", flush=True)
    arq = await run_baseline(children, servers.redis_url, options.jobs, "arq-tuned", tuned)
    print(f"(b) {options.executions} hand-written executions x {options.steps} steps", flush=True)
    raw = await hand_written(children, servers.database_url, servers.redis_url, options, tuning)
    print(f"(c) {options.executions} executions x {options.steps} steps, drain", flush=True)
    ours = await service_drain(children, servers, options, workspace)
    return {
        "options": vars(options),
        "tuning": {"poll_delay": tuning.poll_delay, "max_jobs": tuning.max_jobs},
        "arq_noop": arq,
        "hand_written": raw,
        "service": ours,
        "ratio_to_hand_written": ours["executions_per_second"] / raw["executions_per_second"],
        "ratio_to_arq_noop": ours["executions_per_second"] / arq["jobs_per_second"],
    }


def table(result: dict[str, Any]) -> str:
    arq, raw, ours = result["arq_noop"], result["hand_written"], result["service"]
    lines = [
        "| | per second | worker CPU per step |",
        "|---|---:|---:|",
        f"| (a) arq no-op jobs, same tuning | {arq['jobs_per_second']:.0f} jobs | |",
        f"| (b) hand-written durable steps (raw asyncpg) | {raw['executions_per_second']:.1f} "
        f"executions | {raw['cpu_ms_per_step']:.3f} ms |",
        f"| (c) this service, drain | {ours['executions_per_second']:.1f} executions "
        f"| {ours['cpu_ms_per_step']:.3f} ms |",
        f"| (c) / (b) | {result['ratio_to_hand_written']:.2f} | |",
        f"| (c) / (a) | {result['ratio_to_arq_noop']:.3f} | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)

    async def run_with(children: Children, workspace: Path) -> dict[str, Any]:
        return await run(options, children, workspace)

    run_benchmark("drain", run_with, table)


if __name__ == "__main__":
    main()
