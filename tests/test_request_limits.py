"""Bounds a hostile client cannot get around: request bodies and answers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import psutil

from tests.fixtures.api import api_client, live_api
from tests.fixtures.executions import start


async def test_a_huge_anonymous_body_is_refused_while_it_is_read(make_settings, clean_state):
    settings = make_settings()
    process = psutil.Process(os.getpid())

    async def fifty_megabytes() -> AsyncIterator[bytes]:
        chunk = b"x" * (1 << 20)
        for _ in range(50):
            yield chunk

    async with live_api(settings) as base, httpx.AsyncClient(base_url=base) as http:
        before = process.memory_info().rss
        # No Content-Length (chunked): the limit is enforced on the bytes as they arrive.
        try:
            response = await http.post("/api/agents", content=fifty_megabytes())
            status = response.status_code
        except httpx.HTTPError:
            status = 413  # the server may close the connection while the body is still sent
        grew = process.memory_info().rss - before
    assert status == 413
    assert grew < 10 << 20, f"RSS grew by {grew >> 20} MB"


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    make_settings, clean_state
):
    settings = make_settings(max_body_bytes=10_000)
    async with api_client(settings) as http:
        big = await http.post(
            "/api/agents",
            content=b"{" + b" " * 20_000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413
        assert big.headers["content-type"] == "application/problem+json"
        assert big.json()["type"] == "/problems/payload-too-large"
        # Within the limit the request goes on as usual (here: no token, 401).
        small = await http.post("/api/agents", json={"agent_type": "demo"})
        assert small.status_code == 401


async def test_an_answer_cannot_smuggle_a_large_payload(alice, client, run_worker):
    created = await start(client, alice, "steps-3")
    response = await client.post(
        f"/api/agents/{created['id']}/input",
        json={"input": {"answer": "yes", "extra": "x" * 300_000}},
        headers=alice.headers,
    )
    assert response.status_code == 422
