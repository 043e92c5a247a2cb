"""Control latency: how fast cancel and pause take effect.

    .venv/bin/python -m bench.control [--trials 100]

One API process and one worker process on the embedded (or configured) servers, as
``bench.engine`` runs them. Two measurements, one execution at a time:

* cancel: an execution whose model call hangs (a local server speaking the OpenAI protocol that
  answers after 30 s); once the call is in flight, ``POST /cancel``. Measured: request sent →
  response received, by which time the execution is ``cancelled`` in the database (the API
  commits before it answers; checked after every trial), and request sent → the worker's job
  ended (the provider server sees the call dropped).
* pause: a scripted agent whose steps take 50 ms; after its first step, ``POST /pause``.
  Measured: request sent → the ``status.changed`` event ``paused`` received (published right
  after the worker's commit at the next step boundary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.executions.events import decode_message
from bench.harness import Children, launch_service, run_benchmark, toml_preamble
from bench.metrics import latency_summary

STEP_SECONDS = 0.05
HANG_SECONDS = 30.0
TARGET_CANCEL_P99_MS = 100.0
TARGET_PAUSE_P99_MS = STEP_SECONDS * 1000 + 50.0


class HangingProvider:
    """Accepts chat-completion calls and answers only after ``HANG_SECONDS``."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.dropped = asyncio.Event()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.hang, methods=["POST"])])

    async def hang(self, request: Request) -> JSONResponse:
        self.started.set()
        deadline = time.monotonic() + HANG_SECONDS
        # Watch the connection rather than sleep: the worker dropping the call is the signal.
        while time.monotonic() < deadline and not await request.is_disconnected():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        self.dropped.set()
        return JSONResponse({"error": {"message": "too late"}}, status_code=500)


def config_toml(provider_url: str, workspace: Path) -> str:
    lines = toml_preamble("bench/control.py", workspace)
    lines += [
        "[agent_types.hanging]",
        'provider = "openai"',
        f'base_url = "{provider_url}"',
        'model = "hanging"',
        'api_key_env = ""',
        "max_retries = 0",
        "request_timeout = 60",
        "[agent_types.stepping]",
        'provider = "scripted"',
        'api_key_env = ""',
        'capabilities = ["files"]',
        "max_steps = 100",
    ]
    for _ in range(99):
        lines += [
            "[[agent_types.stepping.script]]",
            f"delay_seconds = {STEP_SECONDS}",
            'tool_calls = [{ name = "list_files", arguments = {} }]',
        ]
    lines += ["[[agent_types.stepping.script]]", 'content = "done"']
    return "\n".join(lines) + "\n"


async def start(client: httpx.AsyncClient, agent_type: str) -> str:
    response = await client.post(
        "/api/agents", json={"agent_type": agent_type, "input": {"prompt": "bench"}}
    )
    response.raise_for_status()
    execution_id: str = response.json()["id"]
    return execution_id


async def cancel_trial(client: httpx.AsyncClient, provider: HangingProvider) -> tuple[float, float]:
    provider.started.clear()
    provider.dropped.clear()
    execution_id = await start(client, "hanging")
    await asyncio.wait_for(provider.started.wait(), 30)
    sent = time.perf_counter()
    response = await client.post(f"/api/agents/{execution_id}/cancel")
    answered = time.perf_counter() - sent
    if response.json()["status"] != "cancelled":
        raise RuntimeError(f"cancel answered {response.text}")
    await asyncio.wait_for(provider.dropped.wait(), 30)
    released = time.perf_counter() - sent
    status = (await client.get(f"/api/agents/{execution_id}")).json()["status"]
    if status != "cancelled":
        raise RuntimeError(f"execution {execution_id} is {status} after its cancel")
    return answered, released


async def pause_trial(client: httpx.AsyncClient, events: Any) -> float:
    execution_id = await start(client, "stepping")
    await _next_event(events, execution_id, "step.completed")
    sent = time.perf_counter()
    response = await client.post(f"/api/agents/{execution_id}/pause")
    response.raise_for_status()
    await _next_event(events, execution_id, "status.changed", status="paused")
    elapsed = time.perf_counter() - sent
    (await client.post(f"/api/agents/{execution_id}/cancel")).raise_for_status()
    return elapsed


async def _next_event(pubsub: Any, execution_id: str, name: str, status: str | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        for event in decode_message(message["data"]):
            data = event["data"]
            if data.get("execution_id") != execution_id or event["event"] != name:
                continue
            if status is None or data.get("status") == status:
                return
    raise RuntimeError(f"no {name} {status or ''} for {execution_id} within 30 s")


async def run(trials: int, children: Children, workspace: Path) -> dict[str, Any]:
    from app.executions.events import user_channel

    provider = HangingProvider()
    server = uvicorn.Server(
        uvicorn.Config(provider.app, host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    provider_port = server.servers[0].sockets[0].getsockname()[1]
    config = workspace / "control.toml"
    config.write_text(config_toml(f"http://127.0.0.1:{provider_port}/v1", workspace / "ws"))
    service = await launch_service(children, config)
    redis = service.redis
    pubsub = redis.pubsub()
    await pubsub.subscribe(user_channel(service.user_id))
    try:
        headers = {"Authorization": f"Bearer {service.token}"}
        async with httpx.AsyncClient(
            base_url=service.base_url, headers=headers, timeout=60
        ) as client:
            print(f"cancel: {trials} trials inside a hanging model call", flush=True)
            cancels = [await cancel_trial(client, provider) for _ in range(trials)]
            print(f"pause: {trials} trials with {STEP_SECONDS * 1000:.0f} ms steps", flush=True)
            pauses = [await pause_trial(client, pubsub) for _ in range(trials)]
    finally:
        await pubsub.aclose()
        await redis.aclose()
        server.should_exit = True
        provider.dropped.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 5)
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "trials": trials,
        "step_seconds": STEP_SECONDS,
        "cancel_request_to_cancelled": latency_summary([a for a, _ in cancels]),
        "cancel_request_to_call_dropped": latency_summary([r for _, r in cancels]),
        "pause_request_to_paused_event": latency_summary(pauses),
    }


def table(result: dict[str, Any]) -> str:
    def row(name: str, key: str, target: float | None) -> str:
        summary = result[key]
        verdict = ""
        if target is not None:
            ok = summary["p99_ms"] <= target
            verdict = f"p99 ≤ {target:.0f} ms: {'PASS' if ok else 'FAIL'}"
        return f"| {name} | {summary['p50_ms']} | {summary['p99_ms']} | {verdict} |"

    return "\n".join(
        [
            f"{result['trials']} trials each, {os.cpu_count()} CPUs, {result['started_at']}",
            "",
            "| Latency | p50 (ms) | p99 (ms) | Target |",
            "|---|---:|---:|---|",
            row(
                "cancel request → `cancelled` in the database (slow model call)",
                "cancel_request_to_cancelled",
                TARGET_CANCEL_P99_MS,
            ),
            row("cancel request → model call dropped", "cancel_request_to_call_dropped", None),
            row(
                f"pause request → `paused` ({STEP_SECONDS * 1000:.0f} ms steps)",
                "pause_request_to_paused_event",
                TARGET_PAUSE_P99_MS,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args(argv)
    run_benchmark(
        "control", lambda children, workspace: run(args.trials, children, workspace), table
    )


if __name__ == "__main__":
    main()
