"""One heartbeat per worker process for every execution it is stepping.

Each interval, one statement refreshes ``heartbeat_at`` of all of them (fenced by their leases,
so the cost does not grow with the number of executions in flight). A chunk whose lease is
gone (a kill, or the sweep gave it to another worker) is stopped. When no heartbeat has got
through for so long that the sweep may soon hand the executions on, every chunk is stopped a
margin before that, so two workers never run one execution's tools at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from app.config import WorkerTuning
from app.executions import worker_repository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Held:
    lease: int
    stop: Callable[[], None]
    since: float


class Heartbeat:
    """The executions this process holds, and the loop that keeps their leases alive."""

    def __init__(
        self, connect: Callable[[], AbstractAsyncContextManager[Any]], tuning: WorkerTuning
    ) -> None:
        self.connect = connect  # a database connection for one statement
        self.interval = tuning.heartbeat_interval
        # A failed attempt can take an interval (its timeout), so fencing starts two intervals
        # before the sweep's limit (never sooner than one interval: a heartbeat is always tried).
        self.fence_after = max(tuning.stale_after - 2 * self.interval, self.interval)
        self._held: dict[uuid.UUID, _Held] = {}
        self.claims = 0  # chunks held since the process started
        self.last_ok = time.monotonic()

    def hold(self, execution_id: uuid.UUID, lease: int, stop: Callable[[], None]) -> None:
        """Keep ``execution_id`` alive under ``lease``; ``stop`` ends its chunk."""
        self._held[execution_id] = _Held(lease, stop, time.monotonic())
        self.claims += 1

    def release(self, execution_id: uuid.UUID) -> None:
        self._held.pop(execution_id, None)

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            await asyncio.sleep(self._next_delay())
            await self.beat()

    def _next_delay(self) -> float:
        if not self._held:
            return self.interval
        return min(self.interval, max(0.0, self.last_ok + self.fence_after - time.monotonic()))

    async def beat(self) -> None:
        """One heartbeat for every execution held now."""
        attempt = time.monotonic()
        held = dict(self._held)
        if not held:
            self.last_ok = attempt
            return
        try:
            async with asyncio.timeout(self.interval), self.connect() as conn:
                alive = await worker_repository.record_heartbeats(
                    conn, {execution_id: h.lease for execution_id, h in held.items()}
                )
        except Exception:
            log.warning("heartbeat for %d executions failed", len(held), exc_info=True)
            now = time.monotonic()
            # An execution claimed since the last good heartbeat was fresh when claimed.
            stale = {
                i: e
                for i, e in held.items()
                if now - max(self.last_ok, e.since) >= self.fence_after
            }
            if stale:
                log.error(
                    "no heartbeat for %.1f s; stopping %d executions before the sweep hands "
                    "them on", now - self.last_ok, len(stale),
                )  # fmt: skip
            for execution_id, entry in stale.items():
                self._stop(execution_id, entry)
            return
        self.last_ok = attempt
        for execution_id, entry in held.items():
            if execution_id not in alive:
                self._stop(execution_id, entry)

    def _stop(self, execution_id: uuid.UUID, entry: _Held) -> None:
        if self._held.get(execution_id) is entry:
            del self._held[execution_id]
            entry.stop()
