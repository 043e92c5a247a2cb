"""Stream fan-out: many SSE or WebSocket clients following running executions.

    .venv/bin/python -m bench.streams [--clients 1000] [--executions 10] [--steps 20]

One API process and one worker process (as ``bench.engine`` runs them). ``--clients`` clients
connect first, spread evenly over ``--executions`` executions of a scripted agent whose steps
take 100 ms; the executions then run. For every ``step.completed`` a client receives, the
delivery latency is its receipt time minus the event's ``timestamp`` (the step's commit, taken
from the database clock on this same machine). Also one extra client per transport connects and
never reads: the others must not fall behind because of it. Reported per transport: latency
p50/p99, events expected vs received, and the API process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from app.executions.events import decode_message
from bench.harness import (
    TERMINAL,
    Children,
    Service,
    launch_service,
    run_benchmark,
    toml_preamble,
)
from bench.metrics import RssSampler, latency_summary, ms, percentile

STEP_SECONDS = 0.1
# The first step waits long enough for every client to connect, so all step events are live.
CONNECT_SECONDS = 8.0
TARGET_P99_MS = 100.0
TARGET_API_RSS_MB = 300.0


def config_toml(steps: int, workspace: Path) -> str:
    lines = toml_preamble("bench/streams.py", workspace)
    lines += [
        "[agent_types.ticker]", 'provider = "scripted"', 'api_key_env = ""',
        'capabilities = ["files"]',
    ]  # fmt: skip
    for number in range(steps - 1):
        delay = CONNECT_SECONDS if number == 0 else STEP_SECONDS
        lines += ["[[agent_types.ticker.script]]", f"delay_seconds = {delay}"]
        lines += ['tool_calls = [{ name = "list_files", arguments = {} }]']
    lines += ["[[agent_types.ticker.script]]", 'content = "done"']
    return "\n".join(lines) + "\n"


class Receiver(asyncio.Protocol):
    """A lean client connection: it only records what arrives, with the arrival time.

    Frames are parsed after the run (``arrivals``), so the load generator, which shares the
    machine with the service, does no JSON work while a burst is being delivered and the
    latency measured is the service's, not the client's.
    """

    def __init__(self, request: bytes, is_last: Callable[[bytes], bool]) -> None:
        self.request = request
        self.is_last = is_last
        self.chunks: list[bytes] = []
        self.times: list[float] = []
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.times.append(time.time())
        self.chunks.append(data)
        window = self._tail + data
        self._tail = window[-512:]
        self.on_data(window)
        if not self.ended.done() and self.is_last(window):
            self.ended.set_result(None)

    def on_data(self, window: bytes) -> None:
        """A hook for a protocol step that must answer what arrived (the WebSocket handshake)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def arrivals(self) -> tuple[bytes, Callable[[int], float]]:
        """Everything received, and the arrival time of the byte before a given offset."""
        ends = list(itertools.accumulate(len(chunk) for chunk in self.chunks))
        return b"".join(self.chunks), lambda offset: self.times[bisect.bisect_left(ends, offset)]


class WebSocketReceiver(Receiver):
    """Sends one masked text frame (the subscription) once the handshake is answered.

    It does not answer the server's keep-alive pings: a run longer than uvicorn's ping interval
    plus timeout (20 s + 20 s) would see its WebSocket clients dropped (they then count as
    unfinished). The default run takes about 10 s.
    """

    def __init__(self, request: bytes, is_last: Callable[[bytes], bool], subscribe: bytes) -> None:
        super().__init__(request, is_last)
        self.subscribe: bytes | None = subscribe

    def on_data(self, window: bytes) -> None:
        if self.subscribe is None or self.transport is None or b"\r\n\r\n" not in window:
            return
        if b" 101 " not in window.split(b"\r\n", 1)[0]:
            self.transport.close()
            return
        mask = os.urandom(4)
        payload = self.subscribe
        self.transport.write(
            bytes([0x81, 0x80 | len(payload)])
            + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        self.subscribe = None


def _sse_finished(window: bytes) -> bool:
    return b"event: finished" in window


def _ws_finished(window: bytes) -> bool:
    return b'"status.changed"' in window and any(
        f'"status": "{s}"'.encode() in window for s in TERMINAL
    )


Sample = tuple[int, float]
"""A step number and the delivery latency of its ``step.completed`` event (seconds)."""


def _sample(data: dict[str, Any], received: float) -> Sample:
    committed = datetime.fromisoformat(data["timestamp"]).timestamp()
    return int(data["step_number"]), received - committed


def summary(samples: list[Sample]) -> dict[str, Any]:
    """Latency percentiles overall and the p99 of each step (a burst shows up as one step)."""
    by_step: dict[int, list[float]] = {}
    for step, latency in samples:
        by_step.setdefault(step, []).append(latency)
    return {
        **latency_summary([latency for _, latency in samples]),
        "p99_ms_by_step": {step: ms(percentile(v, 99)) for step, v in sorted(by_step.items())},
    }


def sse_latencies(receiver: Receiver) -> list[Sample]:
    """Delivery latency of each ``step.completed`` frame of an SSE response."""
    raw, arrival = receiver.arrivals()
    latencies: list[Sample] = []
    position = raw.find(b"\r\n\r\n")  # end of the response head
    while (start := raw.find(b"event: step.completed", position)) != -1:
        data_at = raw.find(b"data: ", start) + 6
        end = raw.find(b"\r\n\r\n", data_at)
        if data_at == 5 or end == -1:  # a frame cut off at the end of the run
            break
        data = raw[data_at : raw.index(b"\r\n", data_at)]
        latencies.append(_sample(json.loads(data), arrival(end + 4)))
        position = end
    return latencies


def ws_latencies(receiver: Receiver) -> list[Sample]:
    """Delivery latency of each ``step.completed`` message of a WebSocket (server frames are
    unmasked)."""
    raw, arrival = receiver.arrivals()
    latencies: list[Sample] = []
    position = raw.find(b"\r\n\r\n") + 4  # end of the handshake response
    while position + 2 <= len(raw):
        length, offset = raw[position + 1] & 0x7F, position + 2
        if length == 126:
            length, offset = int.from_bytes(raw[offset : offset + 2], "big"), offset + 2
        elif length == 127:
            length, offset = int.from_bytes(raw[offset : offset + 8], "big"), offset + 8
        end = offset + length
        if end > len(raw):
            break
        payload = raw[offset:end]
        if raw[position] & 0x0F == 0x1 and b'"step.completed"' in payload[:200]:
            latencies.append(_sample(json.loads(payload)["data"], arrival(end)))
        position = end
    return latencies


async def connect(base: str, token: str, transport: str, execution_id: str) -> Receiver:
    parts = urlsplit(base)
    receiver: Receiver
    if transport == "sse":
        request = (
            f"GET /api/agents/{execution_id}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        receiver = Receiver(request, _sse_finished)
    else:
        request = (
            f"GET /api/ws?token={token} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        subscribe = json.dumps({"action": "subscribe", "channel": f"agent.{execution_id}"})
        receiver = WebSocketReceiver(request, _ws_finished, subscribe.encode())
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: receiver, parts.hostname or "", parts.port or 80)
    return receiver


async def stalled_sse(base: str, token: str, execution_id: str) -> asyncio.StreamWriter:
    """A client that connects and never reads."""
    parts = urlsplit(base)
    _, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"GET /api/agents/{execution_id}/events HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    return writer


async def read_direct(pubsub: Any, latencies: list[Sample], executions: int) -> None:
    """Step latencies of events read directly from Redis, until every execution finished."""
    finished = 0
    while finished < executions:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        received = time.time()
        for event in decode_message(message["data"]):
            if event["event"] == "step.completed":
                latencies.append(_sample(event["data"], received))
            elif event["event"] == "status.changed" and event["data"]["status"] in TERMINAL:
                finished += 1


async def run_transport(
    name: str, service: Service, clients: int, executions: int, steps: int
) -> dict[str, Any]:
    base, token, redis = service.base_url, service.token, service.redis
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        ids = []
        for _ in range(executions):
            response = await http.post(
                "/api/agents", json={"agent_type": "ticker", "input": {"prompt": "bench"}}
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    # Baseline: the same events read straight off Redis pub/sub by this process (commit →
    # worker publish → Redis → here), so the fan-out's own share is what the clients add.
    direct = redis.pubsub()
    await direct.subscribe(*(f"agent.{i}" for i in ids))
    direct_latencies: list[Sample] = []
    reading = asyncio.create_task(read_direct(direct, direct_latencies, executions))
    receivers = await asyncio.gather(
        *(connect(base, token, name, ids[i % executions]) for i in range(clients))
    )
    stalled = await stalled_sse(base, token, ids[0])
    started = time.perf_counter()
    _, pending = await asyncio.wait(
        [r.ended for r in receivers], timeout=steps * STEP_SECONDS * 20 + 60
    )
    for receiver in receivers:
        receiver.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reading, 10)
    await direct.aclose()
    stalled.close()
    parse = sse_latencies if name == "sse" else ws_latencies
    latencies = [value for receiver in receivers for value in parse(receiver)]
    return {
        "clients": clients,
        "executions": executions,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 2),
        "events_expected": clients * steps,
        "events_received": len(latencies),
        "clients_unfinished": len(pending),
        "latency": summary(latencies),
        "redis_latency": summary(direct_latencies),
    }


async def run(options: argparse.Namespace, children: Children, workspace: Path) -> dict[str, Any]:
    config = workspace / "streams.toml"
    config.write_text(config_toml(options.steps, workspace / "ws"))
    service = await launch_service(children, config)
    result: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        api_pid = children.processes["api"].pid
        # Untimed warm-up of both paths, so neither transport pays for a cold start.
        print("warm-up", flush=True)
        for transport in options.transports:
            await run_transport(transport, service, 20, 1, options.steps)
        for transport in options.transports:
            print(f"{transport}: {options.clients} clients", flush=True)
            with RssSampler({"api": api_pid}) as sampler:
                result[transport] = await run_transport(
                    transport,
                    service,
                    options.clients,
                    options.executions,
                    options.steps,
                )
            result[transport]["api_peak_rss_mb"] = round(sampler.peak["api"] / 2**20, 1)
    finally:
        await service.redis.aclose()
    return result


def table(result: dict[str, Any]) -> str:
    rows = [
        f"{os.cpu_count()} CPUs, {result['started_at']}",
        "",
        "| Transport | clients | events received / expected | latency p50 / p99 (ms) | "
        "baseline: Redis direct p50 / p99 (ms) | API peak RSS (MB) | Targets |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("sse", "ws"):
        if name not in result:
            continue
        r = result[name]
        p99 = r["latency"]["p99_ms"]
        ok = (
            p99 is not None and p99 <= TARGET_P99_MS
            and r["api_peak_rss_mb"] <= TARGET_API_RSS_MB
            and r["events_received"] == r["events_expected"]
        )  # fmt: skip
        rows.append(
            f"| {name} | {r['clients']} | {r['events_received']} / {r['events_expected']} | "
            f"{r['latency']['p50_ms']} / {p99} | "
            f"{r['redis_latency']['p50_ms']} / {r['redis_latency']['p99_ms']} | "
            f"{r['api_peak_rss_mb']} | "
            f"p99 ≤ {TARGET_P99_MS:.0f} ms, RSS ≤ {TARGET_API_RSS_MB:.0f} MB, none behind: "
            f"{'PASS' if ok else 'FAIL'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--executions", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--transports", nargs="+", choices=("sse", "ws"), default=["sse", "ws"],
        help="which client kinds to run (default: both)",
    )  # fmt: skip
    options = parser.parse_args(argv)
    run_benchmark("streams", lambda children, workspace: run(options, children, workspace), table)


if __name__ == "__main__":
    main()
