"""The API alone: how many ``POST /api/agents`` one API process takes, and its CPU per POST.

    .venv/bin/python -m bench.api [--posts 5000] [--connections 50] [--users 10]

One ``agents serve`` process on a fresh bench database, no worker (the executions stay
pending: the API's work is the same, and nothing else competes for the CPU). ``--users``
enterprise users with unbounded limits take turns. The load comes from ``--connections``
keep-alive HTTP/1.1 connections driven by a minimal client (pre-encoded requests, responses
parsed just enough to find their end), so the client costs far less CPU than the server.
After ``--warmup`` POSTs, the timed window: POST/s, the API process's CPU per POST (user +
system, from /proc), latency percentiles, and every response's status (all must be 201).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from bench.harness import (
    Children,
    prepare_servers,
    run_benchmark,
    start_api,
    toml_preamble,
)
from bench.metrics import latency_summary


def request_bytes(port: int, token: str, index: int) -> bytes:
    body = json.dumps({"agent_type": "demo", "input": {"prompt": f"bench {index}"}}).encode()
    head = (
        f"POST /api/agents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """One response's status; reads exactly its bytes (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def drive(
    port: int, tokens: list[str], count: int, connections: int, start: int
) -> tuple[list[float], dict[int, int]]:
    """``count`` POSTs over ``connections`` connections; their latencies and status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = start

    async def connection() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < start + count:
                index = next_index
                next_index += 1
                request = request_bytes(port, tokens[index % len(tokens)], index)
                sent = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, statuses


async def make_users(database_url: str, users: int) -> list[str]:
    from app.auth.service import create_token, create_user
    from app.db import create_engine, session_factory, transaction

    engine = create_engine(database_url, pool_size=1)
    tokens = []
    try:
        async with transaction(session_factory(engine)) as session:
            for index in range(users):
                user = await create_user(
                    session, email=f"bench{index}@localhost", name="Bench", tier="enterprise"
                )
                tokens.append(await create_token(session, user, "bench"))
    finally:
        await engine.dispose()
    return tokens


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def run(children: Children, workspace: Path, options: argparse.Namespace) -> dict[str, Any]:
    config = workspace / "agents.toml"
    config.write_text("\n".join(toml_preamble("bench/api.py", workspace / "ws")) + "\n")
    os.environ["AGENTS_CONFIG_FILE"] = str(config)
    servers = await prepare_servers()
    tokens = await make_users(servers.database_url, options.users)
    base_url = await start_api(children)
    port = int(base_url.rsplit(":", 1)[1])
    api = children.processes["api"]
    await drive(port, tokens, options.warmup, options.connections, 0)
    if options.profile:
        children.profile("api")
    cpu_before = cpu_seconds(api.pid)
    began = time.perf_counter()
    latencies, statuses = await drive(
        port, tokens, options.posts, options.connections, options.warmup
    )
    wall = time.perf_counter() - began
    cpu = cpu_seconds(api.pid) - cpu_before
    if options.profile:
        children.stop_profile("api")
    return {
        "posts": options.posts,
        "connections": options.connections,
        "users": options.users,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "posts_per_second": round(options.posts / wall, 1),
        "api_cpu_ms_per_post": round(cpu / options.posts * 1000, 3),
        "api_cpu_cores": round(cpu / wall, 2),
        "latency": latency_summary(latencies),
        "seconds": round(wall, 2),
    }


def table(result: dict[str, Any]) -> str:
    latency = result["latency"]
    return "\n".join(
        [
            "| POSTs | connections | users | POST/s | API CPU per POST | API cores | "
            "p50 | p99 | statuses |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {result['posts']} | {result['connections']} | {result['users']} "
            f"| {result['posts_per_second']} | {result['api_cpu_ms_per_post']} ms "
            f"| {result['api_cpu_cores']} | {latency['p50_ms']} ms | {latency['p99_ms']} ms "
            f"| {result['statuses']} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the API while it answers (raw stacks)"
    )
    options = parser.parse_args()
    run_benchmark("api", lambda c, w: run(c, w, options), table)


if __name__ == "__main__":
    main()
