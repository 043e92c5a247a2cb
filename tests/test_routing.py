"""Queue routing through the API: which queue a start goes to, and the rule that chose it."""

from __future__ import annotations

import pytest

from tests.conftest import scripted_type
from tests.fixtures.api import api_client
from tests.fixtures.users import make_account


@pytest.mark.parametrize(
    ("tier", "body", "queue", "reason"),
    [
        ("pro", {"agent_type": "steps-3"}, "agents-default", "default"),
        ("enterprise", {"agent_type": "steps-3"}, "agents-priority", "tier"),
        ("enterprise", {"agent_type": "research"}, "agents-priority", "tier"),
        ("pro", {"agent_type": "code-review"}, "agents-long", "agent_type"),
        ("pro", {"agent_type": "steps-3", "estimated_steps": 51}, "agents-long", "estimated_steps"),
        ("pro", {"agent_type": "steps-3", "estimated_steps": 50}, "agents-default", "default"),
        ("free", {"agent_type": "steps-3", "queue": "agents-long"}, "agents-long", "requested"),
        (
            "enterprise",
            {"agent_type": "code-review", "queue": "agents-default"},
            "agents-default",
            "requested",
        ),
    ],
)
async def test_a_start_is_routed_by_the_first_rule_that_applies(
    sessions, make_settings, tier, body, queue, reason
):
    # The built-in research and code-review types, scripted so that they need no API key.
    settings = make_settings(
        agent_types={"research": scripted_type(3), "code-review": scripted_type(3)}
    )
    account = await make_account(sessions, f"{tier}-{reason}@example.com", tier=tier)
    async with api_client(settings) as http:
        created = await http.post(
            "/api/agents", json={**body, "input": {"prompt": "x"}}, headers=account.headers
        )
        shown = await http.get(f"/api/agents/{created.json()['id']}", headers=account.headers)

    assert created.status_code == 201, created.text
    assert (created.json()["queue"], created.json()["queue_reason"]) == (queue, reason)
    assert (shown.json()["queue"], shown.json()["queue_reason"]) == (queue, reason)


async def test_a_queue_the_tier_may_not_use_is_refused_and_nothing_starts(sessions, make_settings):
    settings = make_settings()
    free = await make_account(sessions, "cheap@example.com", tier="free")
    async with api_client(settings) as http:
        priority = await http.post(
            "/api/agents",
            json={"agent_type": "steps-3", "input": {"prompt": "x"}, "queue": "agents-priority"},
            headers=free.headers,
        )
        unknown = await http.post(
            "/api/agents",
            json={"agent_type": "steps-3", "input": {"prompt": "x"}, "queue": "elsewhere"},
            headers=free.headers,
        )
        listed = await http.get("/api/agents", headers=free.headers)

    assert priority.status_code == 422
    assert priority.json()["allowed_queues"] == ["agents-default", "agents-long"]
    assert unknown.status_code == 422
    assert listed.json()["total"] == 0


async def test_routing_rules_are_settings(sessions, make_settings, run_worker):
    settings = make_settings(
        routing={"priority_tiers": [], "long_agent_types": [], "long_steps_threshold": 5}
    )
    account = await make_account(sessions, "big@example.com", tier="enterprise")
    async with api_client(settings) as http:
        created = await http.post(
            "/api/agents",
            json={"agent_type": "steps-3", "input": {"prompt": "x"}, "estimated_steps": 6},
            headers=account.headers,
        )
        await run_worker(settings)
        done = await http.get(f"/api/agents/{created.json()['id']}", headers=account.headers)

    assert created.json()["queue"] == "agents-long"
    assert done.json()["status"] == "completed"  # a worker serves the long queue
