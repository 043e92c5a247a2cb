"""How long a Prometheus scrape of the API takes with many executions in the database.

    .venv/bin/python -m bench.scrape [--executions 100000] [--scrapes 50]

A fresh bench database gets ``--executions`` executions in one statement: 98 % finished
(completed, failed or cancelled) at times spread over the last 60 days, the rest pending,
running, paused or waiting. One ``agents serve`` process; an admin token; then ``--scrapes``
sequential ``GET /metrics`` (after 5 unmeasured ones). Reported: latency percentiles, the
body's size, and the plan and time of the queue statement the scrape runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    Children,
    asyncpg_dsn,
    create_account,
    prepare_servers,
    run_benchmark,
    start_api,
)
from bench.metrics import latency_summary

SEED = """
INSERT INTO agent_executions
    (id, user_id, agent_type, status, queue, input, created_at, started_at, completed_at)
SELECT gen_random_uuid(), $1, 'demo',
       CASE WHEN g % 50 = 0 THEN (ARRAY['pending', 'running', 'paused', 'awaiting_event'])[g % 4 + 1]
            ELSE (ARRAY['completed', 'completed', 'failed', 'cancelled'])[g % 4 + 1] END,
       (ARRAY['agents-default', 'agents-default', 'agents-long', 'agents-priority'])[g % 4 + 1],
       '{"prompt": "seeded"}',
       finished - interval '2 minutes', finished - interval '1 minute',
       CASE WHEN g % 50 = 0 THEN NULL ELSE finished END
FROM (SELECT g, now() - random() * interval '60 days' AS finished
      FROM generate_series(1, $2) AS g) AS t
"""  # noqa: E501


async def run(children: Children, workspace: Path, options: argparse.Namespace) -> dict[str, Any]:
    servers = await prepare_servers()
    user_id, token = await create_account(servers.database_url)
    db = await asyncpg.connect(asyncpg_dsn(servers.database_url))
    try:
        await db.execute("UPDATE users SET is_admin = true WHERE id = $1", user_id)
        began = time.perf_counter()
        await db.execute(SEED, user_id, options.executions)
        await db.execute("ANALYZE agent_executions")
        seeded = time.perf_counter() - began
        from app.admin.queues import _STATS  # the statement the scrape runs

        plan = await db.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {_STATS.text}")
    finally:
        await db.close()
    base_url = await start_api(children)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for index in range(options.scrapes + 5):
            started = time.perf_counter()
            response = await http.get("/metrics", headers=headers)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if index >= 5:
                latencies.append(elapsed)
    return {
        "executions": options.executions,
        "seed_seconds": round(seeded, 1),
        "scrape": latency_summary(latencies),
        "body_bytes": len(response.content),
        "queue_statement_plan": [row[0] for row in plan],
    }


def table(result: dict[str, Any]) -> str:
    scrape = result["scrape"]
    lines = [
        f"executions in the database: {result['executions']:,}",
        "| scrapes | p50 | p90 | p99 | max | body |",
        "|---|---|---|---|---|---|",
        f"| {scrape['count']} | {scrape['p50_ms']} ms | {scrape['p90_ms']} ms "
        f"| {scrape['p99_ms']} ms | {scrape['max_ms']} ms | {result['body_bytes']:,} B |",
        "",
        "queue statement:",
        *(f"    {line}" for line in result["queue_statement_plan"]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    options = parser.parse_args()
    run_benchmark("scrape", lambda c, w: run(c, w, options), table)


if __name__ == "__main__":
    main()
