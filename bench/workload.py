"""The engine benchmark's workload: the ``bench`` agent type, and the clients that start its
executions and follow them on the user's pub/sub channel.

``run_throughput`` POSTs executions from concurrent clients and waits for all of them to finish;
``run_sequential`` starts one at a time on an otherwise idle service. Both report, per
execution, POST → first ``step.completed`` and POST → terminal ``status.changed``, as received
by a ``Tracker``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.executions.events import decode_message
from bench.harness import BENCH_QUEUE, TERMINAL, toml_preamble
from bench.metrics import latency_summary

AGENT_TYPE = "bench"


# --- configuration ------------------------------------------------------------------------------


def bench_toml(steps: int, workspace_base: Path) -> str:
    """The settings file for the run: the ``bench`` agent type with a script of ``steps`` turns."""
    from app.config import Limits

    lines = toml_preamble("bench/engine.py", workspace_base)
    if steps > Limits().max_steps:
        # limits.max_steps caps every agent type; chunks of chunk_size steps must fit max_chunks.
        chunks = max(Limits().max_chunks, math.ceil(steps / Limits().chunk_size) + 1)
        lines += ["", "[limits]", f"max_steps = {steps}", f"max_chunks = {chunks}"]
    lines += [
        "",
        f"[agent_types.{AGENT_TYPE}]",
        'description = "Benchmark: K-1 cheap tool calls, then a final answer."',
        'provider = "scripted"',
        'model = "scripted"',
        "# No api_key_env: TOML has no null, and the scripted provider never reads a key.",
        'capabilities = ["files"]',
        f'queue = "{BENCH_QUEUE}"',
        f"max_steps = {steps}",
        "timeout = 600",
    ]
    for _ in range(steps - 1):
        lines += [
            "",
            f"[[agent_types.{AGENT_TYPE}.script]]",
            'tool_calls = [{ name = "list_files", arguments = {} }]',
            "input_tokens = 120",
            "output_tokens = 12",
        ]
    lines += [
        "",
        f"[[agent_types.{AGENT_TYPE}.script]]",
        f'content = "done after {steps} steps"',
        "input_tokens = 150",
        "output_tokens = 30",
    ]
    return "\n".join(lines) + "\n"


# --- events -------------------------------------------------------------------------------------


@dataclass
class Tracker:
    """What the user's channel said about each execution, with local receipt times."""

    first_step: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    terminal: dict[str, tuple[float, str]] = field(default_factory=dict)
    messages: int = 0
    condition: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, raw: bytes, received: float) -> None:
        self.messages += 1
        if any([self._note(event, received) for event in decode_message(raw)]):
            async with self.condition:
                self.condition.notify_all()

    def _note(self, event: dict[str, Any], received: float) -> bool:
        """Record a step or an end; whether it was one."""
        data = event.get("data") or {}
        execution_id = data.get("execution_id")
        if not execution_id:
            return False
        name = event.get("event")
        if name == "step.completed":
            self.first_step.setdefault(execution_id, received)
            self.steps[execution_id] = self.steps.get(execution_id, 0) + 1
        elif name == "status.changed" and data.get("status") in TERMINAL:
            self.terminal.setdefault(execution_id, (received, data["status"]))
        else:
            return False
        return True

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout), self.condition:
                await self.condition.wait_for(predicate)
        except TimeoutError:
            return False
        return True


async def listen(pubsub: Any, tracker: Tracker) -> None:
    async for message in pubsub.listen():
        if message.get("type") == "message":
            await tracker.handle(message["data"], time.perf_counter())


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Posted:
    sent: float
    execution_id: str | None = None
    status_code: int | None = None
    error: str | None = None
    returned: float | None = None


async def post_execution(client: httpx.AsyncClient) -> Posted:
    posted = Posted(sent=time.perf_counter())
    try:
        response = await client.post(
            "/api/agents", json={"agent_type": AGENT_TYPE, "input": {"prompt": "bench"}}
        )
    except httpx.HTTPError as exc:
        posted.error = f"{type(exc).__name__}: {exc}"
        return posted
    posted.returned = time.perf_counter()
    posted.status_code = response.status_code
    if response.status_code == 201:
        posted.execution_id = response.json()["id"]
    else:
        posted.error = response.text[:300]
    return posted


async def run_throughput(
    client: httpx.AsyncClient, tracker: Tracker, executions: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    posts: list[Posted] = []
    remaining = iter(range(executions))
    finished_before = len(tracker.terminal)

    async def poster() -> None:
        for _ in remaining:
            posts.append(await post_execution(client))

    await asyncio.gather(*(poster() for _ in range(concurrency)))
    ids = [p.execution_id for p in posts if p.execution_id]

    def all_finished() -> bool:  # the cheap count first: this runs on every event
        if len(tracker.terminal) - finished_before < len(ids):
            return False
        return all(i in tracker.terminal for i in ids)

    all_done = await tracker.wait_until(all_finished, timeout)
    return summarise(posts, tracker, all_done)


def summarise(posts: list[Posted], tracker: Tracker, all_done: bool) -> dict[str, Any]:
    accepted = [p for p in posts if p.execution_id]
    to_first: list[float] = []
    to_done: list[float] = []
    post_rtt = [p.returned - p.sent for p in accepted if p.returned is not None]
    completed = failed = missing = steps = 0
    last_terminal = 0.0
    for p in accepted:
        assert p.execution_id
        steps += tracker.steps.get(p.execution_id, 0)
        if p.execution_id in tracker.first_step:
            to_first.append(tracker.first_step[p.execution_id] - p.sent)
        end = tracker.terminal.get(p.execution_id)
        if end is None:
            missing += 1
            continue
        last_terminal = max(last_terminal, end[0])
        if end[1] == "completed":
            completed += 1
            to_done.append(end[0] - p.sent)
        else:
            failed += 1
    first_sent = min((p.sent for p in posts), default=0.0)
    window = last_terminal - first_sent if last_terminal else None
    last_returned = max((p.returned for p in posts if p.returned is not None), default=None)
    post_phase = last_returned - first_sent if last_returned is not None else None
    return {
        "posted": len(posts),
        "accepted": len(accepted),
        "post_errors": len(posts) - len(accepted),
        "post_error_samples": [p.error for p in posts if p.error][:3],
        "completed": completed,
        "failed": failed,
        "not_finished": missing,
        "all_finished_in_time": all_done,
        "steps_observed": steps,
        "window_seconds": window,
        "executions_per_second": completed / window if window else None,
        "steps_per_second": steps / window if window else None,
        "post_phase_seconds": post_phase,
        "posts_per_second": len(accepted) / post_phase if post_phase else None,
        "post_rtt": latency_summary(post_rtt),
        "post_to_first_step": latency_summary(to_first),
        "post_to_completed": latency_summary(to_done),
    }


def _is_finished(tracker: Tracker, execution_id: str) -> Callable[[], bool]:
    return lambda: execution_id in tracker.terminal


async def run_sequential(
    client: httpx.AsyncClient, tracker: Tracker, samples: int, timeout: float
) -> dict[str, Any]:
    """One execution at a time: POST, wait for it to finish, pause, next."""
    posts: list[Posted] = []
    all_done = True
    for _ in range(samples):
        posted = await post_execution(client)
        posts.append(posted)
        if posted.execution_id:
            finished = _is_finished(tracker, posted.execution_id)
            all_done &= await tracker.wait_until(finished, timeout)
        await asyncio.sleep(0.05)
    return summarise(posts, tracker, all_done)
