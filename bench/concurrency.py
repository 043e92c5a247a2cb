"""How many executions one worker process keeps in flight at real model latency.

    .venv/bin/python -m bench.concurrency [--executions N] [--steps K] [--latency S]
                                          [--jitter J] [--max-jobs M] [--post-concurrency C]

A provider speaking the OpenAI protocol (``bench.fake_provider``, its own process) answers every
model call after ``S × (1 ± J)`` seconds (default 1 s ± 20%). N executions (default 2,000) of an
agent type of K steps (default 5: K-1 ``list_files`` calls, then an answer) are started through
the API by C concurrent clients and run by ONE worker process (``[worker] max_jobs = M``,
default N). Reported: executions in flight over time (peak, mean), steps/s, the latency bound
(in flight ÷ latency: the steps/s a worker with no overhead would reach), worker RSS and CPU,
PostgreSQL connections the worker held, and the step overhead (from the model's answer to the
step committed: the time between two step rows minus the delay the provider applied).

Results: a markdown table and ``bench/results/concurrency-<stamp>.json``. Check the provider's
own ceiling first with ``python -m bench.fake_provider --self-test 2000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.fake_provider import delay_for
from bench.harness import (
    BENCH_QUEUE,
    ONE_WORKER,
    Children,
    asyncpg_dsn,
    free_port,
    hide_password,
    launch_service,
    run_benchmark,
    toml_preamble,
)
from bench.metrics import CpuMeter, RssSampler, latency_summary, postmaster

AGENT_TYPE = "remote"
SAMPLE_SECONDS = 0.25


@dataclass
class Options:
    executions: int
    steps: int
    latency: float
    jitter: float
    max_jobs: int
    post_concurrency: int
    timeout: float
    live_posts: bool
    profile: bool


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.concurrency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--executions", type=int, default=2000, help="N (default 2000)")
    parser.add_argument("--steps", type=int, default=5, help="K steps each (default 5)")
    parser.add_argument("--latency", type=float, default=1.0, help="model latency, s (1.0)")
    parser.add_argument("--jitter", type=float, default=0.2, help="± share of it (0.2)")
    parser.add_argument("--max-jobs", type=int, default=0, help="worker max_jobs (default N)")
    parser.add_argument("--post-concurrency", type=int, default=50, help="POST clients (50)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
    parser.add_argument(
        "--live-posts",
        action="store_true",
        help="POST while the worker runs (default: POST all, then start the worker, so the "
        "API's speed does not limit how many are in flight)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the worker while it runs (raw stacks)"
    )
    args = parser.parse_args(argv)
    return Options(
        executions=args.executions,
        steps=max(1, args.steps),
        latency=args.latency,
        jitter=args.jitter,
        max_jobs=args.max_jobs or args.executions,
        post_concurrency=args.post_concurrency,
        timeout=args.timeout,
        live_posts=args.live_posts,
        profile=args.profile,
    )


def settings_toml(options: Options, workspace_base: Path, provider_port: int) -> str:
    lines = toml_preamble("bench/concurrency.py", workspace_base)
    lines += [
        "",
        "[worker]",
        f"max_jobs = {options.max_jobs}",
        f"http_max_connections = {max(100, options.max_jobs)}",
        "",
        f"[agent_types.{AGENT_TYPE}]",
        'description = "Benchmark: a remote model with a set latency."',
        'provider = "openai"',
        f'base_url = "http://127.0.0.1:{provider_port}/v1"',
        f'model = "steps-{options.steps}"',
        'api_key_env = ""',
        'capabilities = ["files"]',
        f'queue = "{BENCH_QUEUE}"',
        f"max_steps = {options.steps}",
        "timeout = 3600",
        "request_timeout = 300",
        "max_retries = 0",
    ]
    return "\n".join(lines) + "\n"


def pg_connections(pid: int, port: int) -> int:
    """Connections process ``pid`` holds to PostgreSQL on ``port`` (TCP or its unix socket)."""
    count = 0
    with contextlib.suppress(psutil.Error):
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.raddr and conn.raddr.port == port:
                count += 1
        for conn in psutil.Process(pid).net_connections(kind="unix"):
            if f".s.PGSQL.{port}" in (conn.raddr or ""):
                count += 1
    return count


@dataclass
class Sample:
    at: float
    running: int
    finished: int
    pg_connections: int


async def sample(db: asyncpg.Connection, worker_pid: int, pg_port: int, into: list[Sample]) -> None:
    while True:
        row = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'running') AS running, "
            "count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS finished "
            "FROM agent_executions"
        )
        assert row is not None
        into.append(
            Sample(
                time.perf_counter(),
                row["running"],
                row["finished"],
                pg_connections(worker_pid, pg_port),
            )
        )
        await asyncio.sleep(SAMPLE_SECONDS)


async def post_all(base_url: str, token: str, options: Options) -> tuple[list[str], int]:
    ids: list[str] = []
    errors = 0
    numbers = iter(range(options.executions))
    limits = httpx.Limits(max_connections=options.post_concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def poster() -> None:
            nonlocal errors
            for number in numbers:
                body = {"agent_type": AGENT_TYPE, "input": {"prompt": f"bench {number}"}}
                response = await client.post("/api/agents", json=body)
                if response.status_code == 201:
                    ids.append(response.json()["id"])
                else:
                    errors += 1

        await asyncio.gather(*(poster() for _ in range(options.post_concurrency)))
    return ids, errors


async def step_overheads(db: asyncpg.Connection, options: Options) -> list[float]:
    """Per step: the time since the previous step row (or the claim) minus the provider's
    delay for that turn, in seconds."""
    rows = await db.fetch(
        """
        SELECT e.id, e.input ->> 'prompt' AS prompt,
               array_agg(l.created_at ORDER BY l.id) FILTER (
                   WHERE l.event_type = 'step_completed'
                      OR (l.event_type = 'status_changed' AND l.context ->> 'to' = 'running')
               ) AS times
        FROM agent_executions e JOIN agent_logs l ON l.execution_id = e.id
        GROUP BY e.id
        """
    )
    overheads = []
    for row in rows:
        times = row["times"] or []
        for turn in range(1, len(times)):
            gap = (times[turn] - times[turn - 1]).total_seconds()
            overheads.append(
                gap - delay_for(row["prompt"], turn - 1, options.latency, options.jitter)
            )
    return overheads


async def run(options: Options, children: Children, workspace: Path) -> dict[str, Any]:
    provider_port = free_port()
    children.start(
        "provider",
        [
            sys.executable,
            "-m", "bench.fake_provider", "--port", str(provider_port),
            "--latency", str(options.latency), "--jitter", str(options.jitter),
        ],
    )  # fmt: skip
    config = workspace / "bench.toml"
    config.write_text(settings_toml(options, workspace / "workspaces", provider_port))
    service = await launch_service(children, config)
    database_url = os.environ["DATABASE_URL"]
    print(f"database {hide_password(database_url)}", flush=True)
    db = await asyncpg.connect(asyncpg_dsn(database_url))
    pg_port = int(await db.fetchval("SHOW port"))
    ids: list[str] = []
    post_errors = 0
    posted = 0.0
    if not options.live_posts:
        children.stop("worker")
        print(f"starting {options.executions} executions, worker stopped", flush=True)
        began = time.perf_counter()
        ids, post_errors = await post_all(service.base_url, service.token, options)
        posted = time.perf_counter() - began
        children.start("worker", ONE_WORKER)
    worker_pid = children.processes["worker"].pid
    pids = {"worker": worker_pid, "api": children.processes["api"].pid}
    samples: list[Sample] = []
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options.__dict__,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    try:
        with RssSampler(pids) as rss:
            meter = CpuMeter(pids, postmaster(database_url), service.redis)
            await meter.start()
            sampler = asyncio.create_task(sample(db, worker_pid, pg_port, samples))
            if options.profile:
                children.profile("worker")
            began = time.perf_counter()
            if options.live_posts:
                print(f"starting {options.executions} executions, worker running", flush=True)
                ids, post_errors = await post_all(service.base_url, service.token, options)
                posted = time.perf_counter() - began
            deadline = began + options.timeout
            while time.perf_counter() < deadline:
                children.check_alive("worker")
                if samples and samples[-1].finished >= len(ids):
                    break
                await asyncio.sleep(SAMPLE_SECONDS)
            elapsed = time.perf_counter() - began
            if options.profile:
                children.stop_profile("worker")
            sampler.cancel()
            cpu = await meter.stop()
            peak_rss = rss.rss("worker")
        counts = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'completed') AS completed, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "coalesce(sum(step_count), 0) AS steps FROM agent_executions"
        )
        assert counts is not None
        overheads = await step_overheads(db, options)
    finally:
        await db.close()
        await service.redis.aclose()
    active = [s for s in samples if s.running > 0]
    mean_in_flight = sum(s.running for s in active) / len(active) if active else 0.0
    steps = int(counts["steps"])
    worker_cpu = cpu["cpu_seconds"].get("worker", 0.0)
    result.update(
        {
            "executions": len(ids),
            "post_errors": post_errors,
            "post_seconds": round(posted, 2),
            "completed": counts["completed"],
            "failed": counts["failed"],
            "seconds": round(elapsed, 2),
            "steps": steps,
            "steps_per_second": round(steps / elapsed, 1),
            "in_flight_peak": max((s.running for s in samples), default=0),
            "in_flight_mean": round(mean_in_flight, 1),
            "latency_bound_steps_per_second": round(mean_in_flight / options.latency, 1),
            "worker_rss_mb": round(peak_rss / 2**20, 1),
            "worker_cpu_seconds": worker_cpu,
            "worker_cpu_ms_per_step": round(1000 * worker_cpu / steps, 3) if steps else None,
            "worker_pg_connections_max": max((s.pg_connections for s in samples), default=0),
            "step_overhead": latency_summary(overheads),
            "cpu": cpu,
        }
    )
    return result


def table(result: dict[str, Any]) -> str:
    options = result["options"]
    bound = result["latency_bound_steps_per_second"]
    ratio = result["steps_per_second"] / bound if bound else 0.0
    overhead = result["step_overhead"]
    rows = [
        ("executions × steps", f"{result['executions']} × {options['steps']}"),
        ("model latency", f"{options['latency']:g} s ± {100 * options['jitter']:.0f}%"),
        ("completed / failed", f"{result['completed']} / {result['failed']}"),
        ("in flight: peak / mean", f"{result['in_flight_peak']} / {result['in_flight_mean']}"),
        ("steps/s", f"{result['steps_per_second']}"),
        ("latency bound (mean in flight ÷ latency)", f"{bound} steps/s"),
        ("steps/s ÷ latency bound", f"{ratio:.2f}"),
        ("worker RSS (peak)", f"{result['worker_rss_mb']} MB"),
        ("worker CPU per step", f"{result['worker_cpu_ms_per_step']} ms"),
        (
            "PostgreSQL connections held by the worker (max)",
            f"{result['worker_pg_connections_max']}",
        ),
        ("step overhead p50 / p99", f"{overhead.get('p50_ms')} / {overhead.get('p99_ms')} ms"),
        ("wall time (POSTs took)", f"{result['seconds']} s ({result['post_seconds']} s)"),
    ]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n\n" + json.dumps(result["cpu"]["cpu_seconds"])


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)

    async def run_with(children: Children, workspace: Path) -> dict[str, Any]:
        return await run(options, children, workspace)

    run_benchmark("concurrency", run_with, table)


if __name__ == "__main__":
    main()
