"""Client CPU per model call: the workers' aiohttp client against httpx, in one process.

    .venv/bin/python -m bench.clients [--calls N] [--in-flight C] [--latency S] [--rounds R]

The fake provider (``bench.fake_provider``, its own process) answers every call after
``--latency`` seconds; this process makes N calls, at most C at a time, through each client in
turn (R rounds, alternating, after 200 unmeasured calls each), with a chat request of about
2 KB, reading and decoding each reply as a driver does. Reported: this process's CPU time
(user + system) per call, and the wall time of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.agents.drivers.clients import ModelHttpClient, shared_tls_context
from bench.harness import Children, free_port, run_benchmark

BODY = {
    "model": "steps-5",
    "messages": [
        {"role": "system", "content": "You are a benchmark. " * 70},
        {"role": "user", "content": "bench 1"},
    ],
}


class ShardedHttpx:
    """httpx at its best here: clients of 8 connections, a call going to the first with a free
    one (what workers used before aiohttp). One httpx pool of hundreds of connections costs
    milliseconds per call: httpcore re-scans every connection on each request's start and end."""

    def __init__(self, in_flight: int, shard: int = 8) -> None:
        limits = httpx.Limits(max_connections=shard, max_keepalive_connections=shard)
        count = -(-in_flight // shard)
        self.shard = shard
        self.clients = [
            httpx.AsyncClient(limits=limits, verify=shared_tls_context(), trust_env=False)
            for _ in range(count)
        ]
        self.busy = [0] * count

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        index = next((i for i, n in enumerate(self.busy) if n < self.shard), 0)
        self.busy[index] += 1
        try:
            return await self.clients[index].post(url, **kwargs)
        finally:
            self.busy[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def aiohttp_client(in_flight: int) -> ModelHttpClient:
    return ModelHttpClient(in_flight, trust_env=False)


CLIENTS: dict[str, Callable[[int], Any]] = {"aiohttp": aiohttp_client, "httpx": ShardedHttpx}


async def measure(client: Any, url: str, calls: int, in_flight: int) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``calls`` calls, at most ``in_flight`` at once."""
    slots = asyncio.Semaphore(in_flight)

    async def call() -> None:
        async with slots:
            response = await client.post(url, json=BODY, headers={"Authorization": "Bearer x"})
            if response.status_code != 200:
                raise RuntimeError(f"the provider answered {response.status_code}")
            response.json()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(call() for _ in range(calls)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError(f"the fake provider never listened on port {port}")


async def run(children: Children, options: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    children.start(
        "provider",
        [
            sys.executable, "-m", "bench.fake_provider", "--port", str(port),
            "--latency", str(options.latency), "--jitter", "0",
        ],
    )  # fmt: skip
    await wait_listening(port)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    rounds: list[dict[str, Any]] = []
    for number in range(options.rounds):
        for name, make in CLIENTS.items():
            client = make(options.in_flight)
            await measure(client, url, 200, options.in_flight)  # connections opened, code warm
            cpu, wall = await measure(client, url, options.calls, options.in_flight)
            await client.aclose()
            rounds.append(
                {
                    "round": number + 1,
                    "client": name,
                    "cpu_ms_per_call": round(1000 * cpu / options.calls, 3),
                    "seconds": round(wall, 2),
                }
            )
            print(rounds[-1], flush=True)
    return {"options": vars(options), "rounds": rounds}


def table(result: dict[str, Any]) -> str:
    lines = ["| round | client | CPU per call | wall |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['round']} | {r['client']} | {r['cpu_ms_per_call']} ms | {r['seconds']} s |"
        for r in result["rounds"]
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clients", description=__doc__)
    parser.add_argument("--calls", type=int, default=6000, help="N calls per client (6000)")
    parser.add_argument("--in-flight", type=int, default=300, help="C at once (300)")
    parser.add_argument("--latency", type=float, default=0.2, help="provider latency, s (0.2)")
    parser.add_argument("--rounds", type=int, default=2, help="R alternating rounds (2)")
    options = parser.parse_args()

    async def run_with(children: Children, workspace: Path) -> dict[str, Any]:
        return await run(children, options)

    run_benchmark("clients", run_with, table)


if __name__ == "__main__":
    main()
