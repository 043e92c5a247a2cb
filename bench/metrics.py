"""Measuring the service from outside: peak RSS and CPU seconds of its processes, latency
percentiles, and how busy the machine is."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

RSS_SAMPLE_SECONDS = 0.05


# --- processes ----------------------------------------------------------------------------------


class RssSampler:
    """Peak RSS of processes (each with its children), sampled on a thread every 50 ms."""

    def __init__(self, pids: dict[str, int], interval: float = RSS_SAMPLE_SECONDS) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self, name: str) -> int:
        process = self.processes[name]
        total = 0
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.processes:
                self.peak[name] = max(self.peak[name], self.rss(name))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _process_cpu(process: Any, with_children: bool) -> float:
    total = 0.0
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        total += times.user + times.system
        for child in process.children(recursive=True) if with_children else []:
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    return total


def _all_processes() -> dict[int, tuple[str, float]]:
    found: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is None:
            continue
        label = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])[:100]
        found[process.pid] = (label, times.user + times.system)
    return found


def postmaster(database_url: str) -> Any | None:
    """The PostgreSQL server process when it runs on this machine from a data directory we know
    (the embedded one); None otherwise."""
    from sqlalchemy.engine import make_url

    host = make_url(database_url).query.get("host")
    pid_file = Path(str(host)) / "postmaster.pid" if isinstance(host, str) else None
    if pid_file is None or not pid_file.is_file():
        return None
    with contextlib.suppress(ValueError, psutil.Error):
        return psutil.Process(int(pid_file.read_text().split()[0]))
    return None


class CpuMeter:
    """CPU seconds used between ``start`` and ``stop`` by the worker, the API, this process
    (the load generator), PostgreSQL (when local and embedded), Redis (its INFO) and the
    machine as a whole; "other" is whatever else ran (including other users of the machine).
    """

    def __init__(self, pids: dict[str, int], postgres: Any | None, redis: Any) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.postgres = postgres
        self.redis = redis
        self._before: dict[str, float] = {}
        self._all_before: dict[int, tuple[str, float]] = {}
        self._redis_pid = -1  # counted from its INFO; local or not

    def _other_top(self, count: int = 5) -> list[dict[str, Any]]:
        """The processes outside the service that used most CPU in the window (those that
        ended within it are missed)."""
        ours = {os.getpid(), self._redis_pid, *(p.pid for p in self.processes.values())}
        for process in [*self.processes.values(), self.postgres, psutil.Process()]:
            with contextlib.suppress(psutil.Error, AttributeError):
                ours.update(child.pid for child in process.children(recursive=True))
                ours.add(process.pid)
        deltas = [
            (cpu - self._all_before.get(pid, (label, 0.0))[1], pid, label)
            for pid, (label, cpu) in _all_processes().items()
            if pid not in ours
        ]
        deltas.sort(reverse=True)
        return [
            {"pid": pid, "cpu_seconds": round(delta, 2), "command": label}
            for delta, pid, label in deltas[:count]
            if delta >= 0.05
        ]

    async def _read(self) -> dict[str, float]:
        values = {name: _process_cpu(p, True) for name, p in self.processes.items()}
        values["bench"] = _process_cpu(psutil.Process(), False)
        if self.postgres is not None:
            values["postgres"] = _process_cpu(self.postgres, True)
        with contextlib.suppress(Exception):
            info = await self.redis.info("cpu")
            values["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        machine = psutil.cpu_times()
        values["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        values["wall"] = time.perf_counter()
        return values

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            self._redis_pid = int((await self.redis.info("server"))["process_id"])
        self._before = await self._read()
        self._all_before = _all_processes()

    async def stop(self) -> dict[str, Any]:
        after = await self._read()
        used = {name: after[name] - self._before[name] for name in after if name in self._before}
        wall = used.pop("wall")
        machine = used.pop("machine")
        used["other"] = max(0.0, machine - sum(used.values()))
        capacity = wall * (os.cpu_count() or 1)
        return {
            "cpu_seconds": {name: round(value, 2) for name, value in used.items()},
            "other_top": self._other_top(),
            "machine_cpu_seconds": round(machine, 2),
            "machine_cpu_busy_percent": round(100 * machine / capacity, 1) if capacity else None,
        }


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def latency_summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values)) if values else None,
    }


# --- the machine --------------------------------------------------------------------------------


def wait_quiet(limit: float) -> float | None:
    """Wait up to ``limit`` seconds for < 10% machine CPU over 3 s; the last reading."""
    deadline = time.monotonic() + limit
    busy: float | None = None
    while time.monotonic() < deadline:
        busy = float(psutil.cpu_percent(interval=3.0))
        if busy < 10:
            return busy
        print(f"waiting for a quiet machine: {busy:.0f}% CPU busy", flush=True)
    return busy
