"""``GET /api/admin/queues``: queue depth from Redis, throughput and times from PostgreSQL, and
the live workers."""

from __future__ import annotations

import asyncio
import os

from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.users import make_account
from workers.runner import WorkerGroup


async def test_queue_numbers_and_live_workers(alice, bob, sessions, settings, run_worker):
    admin = await make_account(sessions, "ops@example.com", is_admin=True)
    async with api_client(settings) as http:
        for _ in range(2):
            await start(http, alice, "steps-3")
        await run_worker()
        await start(http, alice, "steps-3")  # waits in Redis: no worker runs now
        view = await http.get("/api/admin/queues", headers=admin.headers)
        refused = await http.get("/api/admin/queues", headers=bob.headers)

        group = WorkerGroup(settings, settings.queue_names())
        running = asyncio.create_task(group.run(handle_signals=False))
        try:
            for _ in range(100):
                polled = await http.get("/api/admin/queues", headers=admin.headers)
                workers = polled.json()["workers"]
                if workers:
                    break
                await asyncio.sleep(0.05)
        finally:
            group.stop()
            await asyncio.wait_for(running, 10)
        after_stop = (await http.get("/api/admin/queues", headers=admin.headers)).json()

    assert view.status_code == 200
    assert refused.status_code == 403
    queues = {queue["name"]: queue for queue in view.json()["queues"]}
    assert set(settings.queue_names()) <= set(queues)
    default = queues["agents-default"]
    assert default["queued"] == 1
    assert default["oldest_wait_seconds"] is not None
    assert default["running"] == 0
    assert default["started"] == {"last_minute": 2, "last_hour": 2}
    assert default["completed"] == {"last_minute": 2, "last_hour": 2}
    assert default["failed"] == {"last_minute": 0, "last_hour": 0}
    assert default["wait_seconds"]["mean"] is not None
    assert default["run_seconds"]["p95"] is not None
    assert queues["agents-long"]["queued"] == 0
    [worker] = workers
    assert worker["pid"] == os.getpid()
    assert worker["queues"] == settings.queue_names()
    assert worker["rss_mb"] > 0
    assert after_stop["workers"] == []
