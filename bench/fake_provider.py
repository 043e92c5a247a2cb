"""A model provider for benchmarks: the OpenAI chat-completions protocol with a set latency.

    .venv/bin/python -m bench.fake_provider --port P [--latency 1.0] [--jitter 0.2]
    .venv/bin/python -m bench.fake_provider --self-test 2000     # its own ceiling, then exit

The model named ``steps-K`` answers K-1 turns with one ``list_files`` tool call, then a final
answer. Each answer waits ``latency × (1 ± jitter)`` seconds, chosen from the request's first
user message and its turn (``delay_for``), so a benchmark can compute the delay of any step.
Runs on uvicorn (uvloop, httptools) and holds thousands of requests at once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def delay_for(prompt: str, turn: int, latency: float, jitter: float) -> float:
    """The seconds the answer to ``turn`` (0-based) of the conversation starting with
    ``prompt`` takes: deterministic, uniform in ``latency × [1 - jitter, 1 + jitter]``."""
    digest = hashlib.blake2b(f"{prompt}\0{turn}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64
    return latency * (1 - jitter + 2 * jitter * unit)


def completion(turn: int, steps: int) -> dict[str, Any]:
    if turn + 1 < steps:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{turn}",
                    "type": "function",
                    "function": {"name": "list_files", "arguments": "{}"},
                }
            ],
        }
    else:
        message = {"role": "assistant", "content": f"done after {steps} steps"}
    return {
        "id": f"chatcmpl-{turn}",
        "object": "chat.completion",
        "created": 0,
        "model": f"steps-{steps}",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132},
    }


def app(latency: float, jitter: float) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        messages = body["messages"]
        turn = sum(1 for m in messages if m["role"] == "assistant")
        prompt = next((m["content"] for m in messages if m["role"] == "user"), "")
        steps = int(str(body.get("model", "steps-1")).removeprefix("steps-") or 1)
        await asyncio.sleep(delay_for(prompt, turn, latency, jitter))
        return JSONResponse(completion(turn, steps))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def serve(port: int, latency: float, jitter: float) -> None:
    import uvicorn

    uvicorn.run(
        app(latency, jitter),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        backlog=8192,
        limit_concurrency=20000,
        # Idle keep-alive connections stay open for the run: a server closing one (uvicorn's
        # default is 5 s) as the client sends on it is a ReadError, which the bench's
        # max_retries = 0 would count as a failed execution.
        timeout_keep_alive=600,
    )


async def self_test(port: int, requests: int, latency: float) -> dict[str, float]:
    """``requests`` at once against the server, each on its own connection, from a raw
    asyncio client (so the client's own cost does not hide the server's ceiling)."""
    body = json.dumps({"model": "steps-1", "messages": [{"role": "user", "content": "x"}]})
    raw = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n{body}"
    ).encode()

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
        try:
            writer.write(raw)
            response = await reader.read()
        finally:
            writer.close()
        return response.startswith(b"HTTP/1.1 200")

    started = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(requests)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    ok = sum(1 for result in results if result is True)
    return {
        "requests": requests,
        "ok": ok,
        "seconds": round(elapsed, 3),
        "overhead_seconds": round(elapsed - latency, 3),
        "requests_per_second": round(ok / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_provider", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--self-test", type=int, metavar="N", help="N requests at once, then exit")
    args = parser.parse_args()
    if args.self_test is None:
        serve(args.port, args.latency, args.jitter)
        return
    import multiprocessing

    from bench.harness import free_port

    port = args.port or free_port()
    server = multiprocessing.Process(target=serve, args=(port, args.latency, 0.0), daemon=True)
    server.start()
    try:
        time.sleep(1.5)
        from bench.harness import use_uvloop

        use_uvloop()
        result = asyncio.run(self_test(port, args.self_test, args.latency))
        print(json.dumps(result))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
