"""End-to-end benchmark of the execution engine against raw arq throughput, in one run.

    .venv/bin/python -m bench.engine [--executions N] [--steps K] [--baseline-jobs M]
                                     [--concurrency C] [--idle-samples S] [--profile-worker]

1. baseline: M no-op arq jobs drained by one arq ``Worker`` process with the service's
   ``[worker]`` tuning (and, for reference only, with arq's defaults, whose 0.5 s poll bounds
   them); ``bench.drain`` compares the worker alone to a hand-written job;
2. throughput: N executions of a scripted ``bench`` agent type of K steps (K-1 ``list_files``
   tool calls, then a final answer), POSTed by C concurrent clients to one API process and run
   by one worker process; completion is observed on the user's pub/sub channel;
3. idle latency: S sequential executions on the idle system, POST → first ``step.completed``;
4. peak RSS of the worker and API processes, sampled every 50 ms.

With no ``DATABASE_URL`` / ``REDIS_URL`` the embedded servers under the data directory are used,
as ``agents`` does. Either way the run uses its own database (``agents_bench``, dropped and
recreated each run) and its own Redis database (15, flushed), never the service's data.
Results: a markdown table on stdout and ``bench/results/engine-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.baselines import run_baseline
from bench.harness import (
    ONE_WORKER,
    RESULTS_DIR,
    ROOT,
    Children,
    hide_password,
    prepare_servers,
    start_run,
    start_service,
    use_uvloop,
    write_result,
)
from bench.metrics import CpuMeter, RssSampler, postmaster, wait_quiet
from bench.workload import Tracker, bench_toml, listen, run_sequential, run_throughput

IDLE_CPU_SECONDS = 3.0

TARGET_IDLE_P99_MS = 50.0
TARGET_WORKER_RSS_MB = 150.0


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Options:
    executions: int
    steps: int
    baseline_jobs: int
    concurrency: int
    idle_samples: int
    warmup: int
    timeout: float
    profile_worker: bool
    tuned_baseline: bool
    wait_quiet: float


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--executions", type=int, default=200, help="N (default 200)")
    parser.add_argument("--steps", type=int, default=10, help="K steps per execution (default 10)")
    parser.add_argument("--baseline-jobs", type=int, default=2000, help="M (default 2000)")
    parser.add_argument("--concurrency", type=int, default=20, help="C POST clients (default 20)")
    parser.add_argument("--idle-samples", type=int, default=50, help="sequential executions (50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed executions first (5)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait per phase")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the machine to be idle (< 10%% CPU over 3 s)",
    )
    parser.add_argument(
        "--no-tuned-baseline",
        action="store_true",
        help="skip the reference baseline that uses the service's [worker] tuning",
    )
    parser.add_argument(
        "--profile-worker",
        action="store_true",
        help="run the worker under pyinstrument (slower); writes *-worker-profile.md",
    )
    args = parser.parse_args(argv)
    for name in ("executions", "steps", "baseline_jobs", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(
        executions=args.executions,
        steps=args.steps,
        baseline_jobs=args.baseline_jobs,
        concurrency=args.concurrency,
        idle_samples=max(0, args.idle_samples),
        warmup=max(0, args.warmup),
        timeout=args.timeout,
        profile_worker=args.profile_worker,
        tuned_baseline=not args.no_tuned_baseline,
        wait_quiet=max(0.0, args.wait_quiet),
    )


async def run(options: Options, children: Children, stamp: str) -> dict[str, Any]:
    from app.config import Settings
    from app.executions.events import user_channel

    servers = await prepare_servers()
    database_url, redis_url = servers.database_url, servers.redis_url
    settings = Settings()
    print(f"database {hide_password(database_url)}", flush=True)
    print(f"redis    {hide_password(redis_url)}", flush=True)

    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": options.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            # Other work on the machine skews every number: note how busy it was at the start.
            "load_average_1m_at_start": round(psutil.getloadavg()[0], 2),
        },
        "services": {
            "embedded": servers.embedded,
            "database_url": hide_password(database_url),
            "redis_url": hide_password(redis_url),
        },
        "worker_tuning": settings.worker.model_dump(),
        "chunk_size": settings.limits.chunk_size,
    }

    print(f"baseline: {options.baseline_jobs} no-op arq jobs, arq's default Worker", flush=True)
    result["baseline"] = await run_baseline(
        children, redis_url, options.baseline_jobs, "baseline-worker", []
    )
    if options.tuned_baseline:
        tuning = settings.worker
        print(f"baseline: again with poll_delay={tuning.poll_delay} max_jobs={tuning.max_jobs}")
        result["baseline_tuned"] = await run_baseline(
            children,
            redis_url,
            options.baseline_jobs,
            "baseline-worker-tuned",
            ["--poll-delay", str(tuning.poll_delay), "--max-jobs", str(tuning.max_jobs)],
        )

    worker_argv = None
    if options.profile_worker:
        profile = RESULTS_DIR / f"engine-{stamp}-worker.pyisession"
        result["worker_profile_session"] = str(profile.relative_to(ROOT))
        worker_argv = [
            sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(profile),
            *ONE_WORKER[1:],
        ]  # fmt: skip
    service = await start_service(children, servers, worker_argv)
    redis = service.redis
    pubsub = redis.pubsub()
    await pubsub.subscribe(user_channel(service.user_id))
    tracker = Tracker()
    listener = asyncio.create_task(listen(pubsub, tracker))
    try:
        pids = {"worker": children.processes["worker"].pid, "api": children.processes["api"].pid}
        limits = httpx.Limits(max_connections=options.concurrency + 5)
        headers = {"Authorization": f"Bearer {service.token}"}
        async with httpx.AsyncClient(
            base_url=service.base_url, headers=headers, limits=limits, timeout=60
        ) as client:
            with RssSampler(pids) as sampler:
                if options.warmup:
                    print(f"warm-up: {options.warmup} executions", flush=True)
                    await run_sequential(client, tracker, options.warmup, options.timeout)
                # What the service costs doing nothing (queue polling, heartbeats).
                print(f"idle CPU: {IDLE_CPU_SECONDS:g} s", flush=True)
                meter = CpuMeter(pids, postmaster(database_url), redis)
                await asyncio.sleep(1.0)
                await meter.start()
                await asyncio.sleep(IDLE_CPU_SECONDS)
                quiet = await meter.stop()
                result["idle_cpu_percent"] = {
                    name: round(100 * quiet["cpu_seconds"][name] / IDLE_CPU_SECONDS, 1)
                    for name in ("worker", "api")
                }
                print(
                    f"throughput: {options.executions} executions x {options.steps} steps, "
                    f"{options.concurrency} concurrent clients",
                    flush=True,
                )
                await meter.start()
                result["throughput"] = await run_throughput(
                    client, tracker, options.executions, options.concurrency, options.timeout
                )
                result["throughput"].update(await meter.stop())
                rss_after_throughput = {name: sampler.peak[name] for name in pids}
                if options.idle_samples:
                    await asyncio.sleep(1.0)
                    print(f"idle latency: {options.idle_samples} sequential executions", flush=True)
                    result["idle"] = await run_sequential(
                        client, tracker, options.idle_samples, options.timeout
                    )
            result["rss_mb"] = {
                "worker_peak": round(sampler.peak["worker"] / 2**20, 1),
                "api_peak": round(sampler.peak["api"] / 2**20, 1),
                "worker_peak_during_throughput": round(rss_after_throughput["worker"] / 2**20, 1),
                "samples": sampler.samples,
            }
        result["events_received"] = tracker.messages
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        await pubsub.aclose()
        await redis.aclose()
    # SIGTERM lets the worker finish cleanly (and pyinstrument write its report).
    result["exit_codes"] = {name: children.stop(name, timeout=60) for name in ("worker", "api")}
    return result


# --- report -------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def table(result: dict[str, Any]) -> str:
    base = result["baseline"]
    tput = result["throughput"]
    idle = result.get("idle") or {}
    rss = result["rss_mb"]
    options = result["options"]
    base_rate = base.get("jobs_per_second")
    # The baseline is arq with the service's own tuning; arq's defaults (a 0.5 s poll) are
    # shown for reference only: bound by their polling, they are no baseline.
    tuned_rate = (result.get("baseline_tuned") or {}).get("jobs_per_second")
    rate = tput.get("executions_per_second")
    ratio = rate / tuned_rate if rate and tuned_rate else None
    idle_first = idle.get("post_to_first_step") or {}
    idle_p99 = idle_first.get("p99_ms")
    result["ratio_to_baseline"] = ratio
    result["targets"] = {
        "executions_per_second_ratio": {"target": None, "value": ratio, "pass": None},
        "idle_post_to_first_step_p99_ms": {
            "target": f"<= {TARGET_IDLE_P99_MS}",
            "value": idle_p99,
            "pass": None if idle_p99 is None else idle_p99 <= TARGET_IDLE_P99_MS,
        },
        "worker_peak_rss_mb": {
            "target": f"<= {TARGET_WORKER_RSS_MB}",
            "value": rss["worker_peak"],
            "pass": rss["worker_peak"] <= TARGET_WORKER_RSS_MB,
        },
    }
    targets = result["targets"]
    cpu = tput["cpu_seconds"]
    first = tput["post_to_first_step"]
    done = tput["post_to_completed"]
    rows = [
        ("arq no-op jobs/s, arq defaults (poll-bound; reference only)", _fmt(base_rate), "", ""),
    ]
    if "baseline_tuned" in result:
        tuned = result["baseline_tuned"]
        rows.append(
            (
                f"Baseline: arq no-op jobs/s, the service's tuning "
                f"(poll_delay={tuned['poll_delay']}, max_jobs={tuned['max_jobs']})",
                _fmt(tuned_rate),
                "",
                "",
            )
        )
    rows += [
        ("Executions/s", _fmt(rate, 2), "", ""),
        ("Steps/s", _fmt(tput.get("steps_per_second")), "", ""),
        (
            "Executions/s ÷ baseline jobs/s (same tuning; bench.drain compares to hand-written)",
            _fmt(ratio, 3),
            "",
            "",
        ),
        (
            "Load: POST → first step p50 / p99 (ms)",
            f"{_fmt(first['p50_ms'])} / {_fmt(first['p99_ms'])}",
            "",
            "",
        ),
        (
            "Load: POST → completed p50 / p99 (ms)",
            f"{_fmt(done['p50_ms'])} / {_fmt(done['p99_ms'])}",
            "",
            "",
        ),
        (
            "Load: POSTs/s accepted (all N POSTs answered after, s)",
            f"{_fmt(tput.get('posts_per_second'))} ({_fmt(tput.get('post_phase_seconds'), 2)})",
            "",
            "",
        ),
        (
            "Load: POST round trip p50 / p99 (ms)",
            f"{_fmt(tput['post_rtt']['p50_ms'])} / {_fmt(tput['post_rtt']['p99_ms'])}",
            "",
            "",
        ),
        (
            "Failures (POST errors + failed + unfinished)",
            str(tput["post_errors"] + tput["failed"] + tput["not_finished"]),
            "0",
            _verdict(tput["post_errors"] + tput["failed"] + tput["not_finished"] == 0),
        ),
    ]
    if idle:
        rows += [
            (
                "Idle: POST → first step p50 / p99 (ms)",
                f"{_fmt(idle_first['p50_ms'])} / {_fmt(idle_p99)}",
                f"p99 ≤ {TARGET_IDLE_P99_MS:g}",
                _verdict(targets["idle_post_to_first_step_p99_ms"]["pass"]),
            ),
            (
                "Idle: POST → completed p50 / p99 (ms)",
                f"{_fmt(idle['post_to_completed']['p50_ms'])} / "
                f"{_fmt(idle['post_to_completed']['p99_ms'])}",
                "",
                "",
            ),
        ]
    rows += [
        (
            "Worker peak RSS (MB)",
            _fmt(rss["worker_peak"]),
            f"≤ {TARGET_WORKER_RSS_MB:g}",
            _verdict(targets["worker_peak_rss_mb"]["pass"]),
        ),
        ("API peak RSS (MB)", _fmt(rss["api_peak"]), "", ""),
        (
            "Idle CPU % of one core: worker / api",
            " / ".join(_fmt(result["idle_cpu_percent"][k]) for k in ("worker", "api")),
            "",
            "",
        ),
        (
            "CPU s during load: " + " / ".join(cpu),
            " / ".join(_fmt(cpu[k], 1) for k in cpu),
            "",
            "",
        ),
        ("Machine CPU busy during load (%)", _fmt(tput.get("machine_cpu_busy_percent")), "", ""),
    ]
    other = tput["cpu_seconds"].get("other", 0.0)
    notes = []
    if other > 0.1 * (tput.get("machine_cpu_seconds") or 0):
        top = "; ".join(
            f"{p['cpu_seconds']} s {p['command'][:60]}" for p in tput.get("other_top", [])[:3]
        )
        notes = [
            "",
            f"WARNING: the machine was shared: {other:.1f} CPU-s went to other processes "
            f"during the load phase ({top or 'short-lived processes'}).",
        ]
    header = (
        f"N={options['executions']} K={options['steps']} M={options['baseline_jobs']} "
        f"C={options['concurrency']}, {result['machine']['cpus']} CPUs, {result['started_at']}"
    )
    lines = [header, "", "| Metric | Value | Target | |", "|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    quiet = wait_quiet(options.wait_quiet) if options.wait_quiet else None
    stamp, log_dir = start_run("engine")
    sys.path.insert(0, str(ROOT))
    workspace = Path(tempfile.mkdtemp(prefix="agents-bench-"))
    config = RESULTS_DIR / f"engine-{stamp}.toml"
    config.write_text(bench_toml(options.steps, workspace / "workspaces"))
    os.environ["AGENTS_CONFIG_FILE"] = str(config)

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    use_uvloop()
    children = Children(log_dir)
    try:
        result = asyncio.run(run(options, children, stamp))
    except KeyboardInterrupt:
        sys.exit("interrupted: child processes stopped")
    finally:
        children.stop_all()
        shutil.rmtree(workspace, ignore_errors=True)
    if "worker_profile_session" in result:
        from bench.profile_summary import render, summarise

        summary = summarise(str(ROOT / result["worker_profile_session"]))
        result["worker_profile"] = summary
        profile_text = RESULTS_DIR / f"engine-{stamp}-worker-profile.md"
        profile_text.write_text(render(summary) + "\n")
        print(render(summary), end="\n\n")
    result["machine"]["cpu_percent_before_start"] = quiet
    result["config_file"] = str(config.relative_to(ROOT))
    result["logs"] = str(log_dir.relative_to(ROOT))
    report = table(result)  # also adds the ratio and the targets to the result
    write_result("engine", stamp, result, report)


if __name__ == "__main__":
    main()
