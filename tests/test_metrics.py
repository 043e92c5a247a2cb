"""``GET /metrics``: what a Prometheus scrape of the API reads after real executions."""

from __future__ import annotations

import httpx

from tests.conftest import scripted_type
from tests.fixtures.api import api_client
from tests.fixtures.executions import start
from tests.fixtures.metrics import Samples, parse_samples, value
from tests.fixtures.users import Account, make_account


async def scrape(http: httpx.AsyncClient, admin: Account) -> Samples:
    response = await http.get("/metrics", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse_samples(response.text)


async def test_a_scrape_counts_executions_steps_tokens_requests_and_queues(
    alice, bob, sessions, make_settings, run_worker
):
    spec = scripted_type(3)
    spec.script[0].input_tokens, spec.script[0].output_tokens = 120, 30
    settings = make_settings(agent_types={"metered": spec})
    admin = await make_account(sessions, "ops@example.com", is_admin=True)
    async with api_client(settings) as http:
        # Counters live as long as the process: compare with a scrape before.
        before = await scrape(http, admin)
        await start(http, alice, "metered")
        await start(http, alice, "metered")
        await run_worker(settings)
        await start(http, alice, "metered")  # left queued: no worker runs now
        await http.get("/no/such/path/12345", headers=alice.headers)
        for method in ("PROPFIND", "MKCOL", "BREW"):  # unknown methods: one series
            await http.request(method, "/api/agents")
        after = await scrape(http, admin)
        anonymous = await http.get("/metrics")
        not_admin = await http.get("/metrics", headers=bob.headers)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    started = {"agent_type": "metered", "queue": "agents-default"}
    assert delta("agents_executions_started_total", **started) == 3
    assert delta("agents_executions_finished_total", agent_type="metered", status="completed") == 2
    assert delta("agents_step_duration_seconds_count", agent_type="metered") == 6
    model = {"provider": "scripted", "model": spec.model}
    assert delta("agents_model_call_duration_seconds_count", **model) == 6
    for direction in ("input", "output"):
        per_run = sum(getattr(turn, f"{direction}_tokens") for turn in spec.script)
        assert delta("agents_tokens_total", direction=direction, **model) == 2 * per_run
    posted = {"method": "POST", "route": "/api/agents", "status": "201"}
    assert delta("agents_http_request_duration_seconds_count", **posted) == 3
    # A path no route matches is one series, whatever the path.
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert delta("agents_http_request_duration_seconds_count", **unmatched) == 1
    assert not any("12345" in str(labels) for _, labels in after)
    other = {"method": "other", "route": "/api/agents", "status": "405"}
    assert delta("agents_http_request_duration_seconds_count", **other) == 3
    assert not any("PROPFIND" in str(labels) for _, labels in after)
    # Read at scrape time.
    assert value(after, "agents_queue_jobs", queue="agents-default") == 1
    assert value(after, "agents_queue_oldest_wait_seconds", queue="agents-default") > 0
    assert value(after, "agents_executions_running", queue="agents-default") == 0
    assert value(after, "agents_workers") == 0
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert not_admin.status_code == 403


async def test_metrics_can_be_public_or_off(alice, make_settings, clean_state):
    public = make_settings(metrics={"require_admin": False})
    async with api_client(public) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "agents_executions_started_total" in response.text
    off = make_settings(metrics={"enabled": False})
    async with api_client(off) as http:
        response = await http.get("/metrics", headers=alice.headers)
    assert response.status_code == 404
