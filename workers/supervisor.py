"""Keeps the worker pools running: one child process per slot, restarted when it dies.

``agents worker`` with no ``--queue`` runs this. Each pool (``[worker.pools.NAME]``) gets
``processes`` children, each an ``agents worker --queue ...`` process with the pool's
``max_jobs``, ``timeout`` and ``max_memory_mb``. A child that dies is started again after a
backoff that doubles while it keeps dying young; a child that stopped because it passed its
memory cap (it hands its executions over first) is replaced at once. On SIGTERM or SIGINT
every child drains (see :class:`workers.runner.WorkerGroup`); children still running after
the grace period are killed, and their executions resume from their last committed step once
the recovery sweep sees their heartbeats go stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass

from prometheus_client import start_http_server

from app import metrics
from app.config import Settings

log = logging.getLogger(__name__)

# A worker process exits with this when it stopped itself to be replaced (memory cap).
EXIT_RECYCLED = 3


@dataclass(frozen=True)
class PoolPlan:
    """One pool as the supervisor runs it."""

    name: str
    queues: tuple[str, ...]
    processes: int
    max_jobs: int | None = None
    timeout: float | None = None
    max_memory_mb: int | None = None

    def argv(self) -> list[str]:
        """The command line of one of the pool's processes."""
        argv = [sys.executable, "-m", "app.cli", "worker"]
        for queue in self.queues:
            argv += ["--queue", queue]
        if self.max_jobs is not None:
            argv += ["--max-jobs", str(self.max_jobs)]
        if self.timeout is not None:
            argv += ["--timeout", f"{self.timeout:g}"]
        if self.max_memory_mb is not None:
            argv += ["--max-memory-mb", str(self.max_memory_mb)]
        return argv

    def describe(self) -> str:
        limits = [
            f"max_jobs {self.max_jobs}" if self.max_jobs else "",
            f"timeout {self.timeout:g} s" if self.timeout else "",
            f"max_memory_mb {self.max_memory_mb}" if self.max_memory_mb else "",
        ]
        return (
            f"pool {self.name}: {self.processes} process(es) on {', '.join(self.queues)}"
            + "".join(f", {limit}" for limit in limits if limit)
        )


def pool_size_each(settings: Settings, pools: list[PoolPlan]) -> int:
    """Each supervised process's PostgreSQL connections: ``worker.db_connections`` shared out,
    at least 5, at most ``worker.db_pool_size``."""
    processes = sum(pool.processes for pool in pools)
    tuning = settings.worker
    return max(5, min(tuning.db_pool_size, tuning.db_connections // max(1, processes)))


class NoPools(ValueError):
    """No pool has a process: nothing would serve the queues."""


def plan_pools(settings: Settings) -> list[PoolPlan]:
    """The configured pools with at least one process. A queue no pool names (an agent type's
    own queue, say) is served by the pool of the default queue, or else the first pool."""
    plans = [
        PoolPlan(
            name=name,
            queues=tuple(pool.queues or [name]),
            processes=pool.processes,
            max_jobs=pool.max_jobs,
            timeout=pool.timeout,
            max_memory_mb=pool.max_memory_mb,
        )
        for name, pool in settings.worker.pools.items()
        if pool.processes > 0
    ]
    if not plans:
        raise NoPools("every [worker.pools.*] has processes = 0: no worker would run")
    served = {queue for plan in plans for queue in plan.queues}
    unserved = tuple(queue for queue in settings.queue_names() if queue not in served)
    if unserved:
        index = next(
            (i for i, plan in enumerate(plans) if settings.queues.default in plan.queues), 0
        )
        home = plans[index]
        log.info("queues %s have no pool of their own: pool %s serves them", unserved, home.name)
        plans[index] = PoolPlan(
            home.name,
            home.queues + unserved,
            home.processes,
            home.max_jobs,
            home.timeout,
            home.max_memory_mb,
        )
    return plans


class Supervisor:
    """Runs the pools' processes until :meth:`stop`; see the module's docstring."""

    def __init__(
        self,
        pools: list[PoolPlan],
        *,
        grace: float,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        healthy_after: float = 30.0,
        db_pool_size: int | None = None,
    ) -> None:
        self.pools = pools
        self.db_pool_size = db_pool_size
        self.grace = grace
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self._stopping = asyncio.Event()

    async def run(self, *, handle_signals: bool = True, metrics_listen: str | None = None) -> None:
        """Until :meth:`stop`; with ``metrics_listen`` (host:port), the children's summed
        metrics are served there (no auth: bind it to a private address)."""
        if metrics_listen:
            serve_metrics(metrics_listen)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stop)
        for pool in self.pools:
            log.info("supervising %s", pool.describe())
        slots = [
            asyncio.create_task(self._keep(pool, slot))
            for pool in self.pools
            for slot in range(pool.processes)
        ]
        # Each slot stops its own process (it drains) once stopping is set.
        await asyncio.gather(*slots)

    def stop(self) -> None:
        self._stopping.set()

    async def _keep(self, pool: PoolPlan, slot: int) -> None:
        """Keep one process of the pool running until the supervisor stops, then stop it."""
        loop = asyncio.get_running_loop()
        young_deaths = 0
        while not self._stopping.is_set():
            started = loop.time()
            try:
                process = await asyncio.create_subprocess_exec(*pool.argv(), env=self._env())
            except OSError as exc:  # fork or exec refused: out of memory or processes
                young_deaths += 1
                delay = self._delay(young_deaths)
                log.error(
                    "pool %s process %d could not start (%s); trying again in %g s",
                    pool.name, slot, exc, delay,
                )  # fmt: skip
                await self._sleep(delay)
                continue
            code = await self._wait_or_stop(process)
            metrics.process_ended(process.pid)
            lived = loop.time() - started
            if self._stopping.is_set():
                return
            if code == EXIT_RECYCLED:
                log.info(
                    "pool %s process %d (pid %d) stopped at its memory cap after %.1f s; "
                    "starting a fresh one",
                    pool.name, slot, process.pid, lived,
                )  # fmt: skip
                young_deaths = 0
                continue
            young_deaths = young_deaths + 1 if lived < self.healthy_after else 1
            delay = self._delay(young_deaths)
            log.error(
                "pool %s process %d (pid %d) exited with %s after %.1f s; restarting in %g s",
                pool.name, slot, process.pid, describe_exit(code), lived, delay,
            )  # fmt: skip
            await self._sleep(delay)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}
        if self.db_pool_size is not None:
            env["AGENTS_WORKER__DB_POOL_SIZE"] = str(self.db_pool_size)
        return env

    def _delay(self, young_deaths: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2.0 ** (young_deaths - 1)))

    async def _sleep(self, delay: float) -> None:
        """``delay`` seconds, or less if the supervisor stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _wait_or_stop(self, process: asyncio.subprocess.Process) -> int:
        """The process's exit code. If the supervisor stops first: SIGTERM (it drains), and
        SIGKILL if it is still running after the grace period and a little time to close."""
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.grace + 10)
            except TimeoutError:
                log.error("pid %d did not stop within the grace period: killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        return await exited


def serve_metrics(listen: str) -> None:
    """Serve this process's metrics (in multi-process mode: every process's) on ``listen``
    (host:port), from a thread, without auth: bind it to a private address."""
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), host or "0.0.0.0", registry=metrics.registry())
    log.info("worker metrics on http://%s/metrics", listen)


def supervised() -> bool:
    """Whether this process is a worker ``agents worker`` started."""
    return SUPERVISOR_PID_ENV in os.environ


def stop_with_supervisor() -> None:
    """In a worker the supervisor started: get SIGTERM (and drain) when the supervisor dies,
    however it dies, so no worker outlives it unsupervised (Linux; elsewhere they run on). If
    it died before this ran, exit now: nothing has started yet."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):
        sys.exit(0)


_PR_SET_PDEATHSIG = 1
SUPERVISOR_PID_ENV = "AGENTS_SUPERVISOR_PID"


def describe_exit(code: int) -> str:
    """``code 1``, or ``signal SIGKILL`` for a process a signal ended."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"code {code}"
