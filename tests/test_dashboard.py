"""The dashboard in a real headless Chromium (Playwright, Debian's chromium) against a live
server: sign in, rows that change live over the WebSocket, the detail with its SSE log, the
control buttons, starting an execution from the form, answering a question inline, the
conversation and subagent children; for admins, every user's executions with their filters and
the live Queues page."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from tests.conftest import ROOT, scripted_type
from tests.fixtures.api import live_api
from tests.fixtures.executions import start
from tests.fixtures.queue_history import (
    execution_row,
    insert_executions,
    insert_logs,
    sample_depths,
)
from tests.fixtures.users import make_account
from workers.runner import WorkerGroup

CHROMIUM = Path("/usr/bin/chromium")
# The README's screenshots are refreshed only on request, so a test run leaves the tree clean:
#   AGENTS_UPDATE_SCREENSHOT=1 .venv/bin/pytest tests/test_dashboard.py
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"  # the start form and a conversation
DOCS_LIVE_SCREENSHOT = ROOT / "docs" / "dashboard-live.png"  # live rows and the SSE log
DOCS_QUEUES_SCREENSHOT = ROOT / "docs" / "dashboard-queues.png"  # the admin's Queues page
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium (.ci/run installs Debian's chromium)"
)


@contextlib.asynccontextmanager
async def browser_page(
    width: int, height: int, errors: list[str], *, console: bool = False
) -> AsyncIterator[Any]:
    """A page of headless Chromium; its script errors (and, with ``console``, its console
    errors) go to ``errors``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            if console:
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.set_default_timeout(10_000)
            yield page
        finally:
            await browser.close()


async def test_pages_and_current_user(alice, make_settings):
    async with live_api(make_settings()) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "/dashboard/static/app.js" in page.text
        assert (await http.get("/dashboard/static/app.css")).status_code == 200
        assert (await http.get("/dashboard/static/../router.py")).status_code == 404
        assert (await http.get("/dashboard/static/nope.js")).status_code == 404
        for name in ("queues.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
            vendored = await http.get(f"/dashboard/static/{name}")
            assert vendored.status_code == 200, name
            assert vendored.headers["content-type"].startswith(("text/javascript", "text/css"))
        assert (await http.get("/dashboard/static/vendor/uPlot.d.ts")).status_code == 404
        assert (await http.get("/api/me")).status_code == 401
        me = (await http.get("/api/me", headers=alice.headers)).json()
        assert me == {
            "id": alice.user.id, "name": alice.user.name, "email": "alice@example.com",
            "tier": "pro", "is_admin": False,
        }  # fmt: skip
        spec = (await http.get("/openapi.json")).json()
        assert spec["paths"]["/api/me"]["get"]["operationId"] == "getCurrentUser"
        assert "/dashboard" not in spec["paths"]


@needs_chromium
async def test_dashboard_updates_live_streams_logs_and_controls(
    alice, make_settings, run_worker, tmp_path
):
    from playwright.async_api import expect

    began = time.monotonic()
    update_docs = os.environ.get("AGENTS_UPDATE_SCREENSHOT") == "1"
    screenshot = DOCS_LIVE_SCREENSHOT if update_docs else tmp_path / "dashboard.png"
    settings = make_settings(agent_types={"too-long": scripted_type(5, max_steps=2)})
    errors: list[str] = []
    async with (
        live_api(settings) as base,
        httpx.AsyncClient(base_url=base) as http,
        browser_page(1400, 780, errors) as page,
    ):
        await page.goto(f"{base}/dashboard")

        await page.fill("#token", "not-a-token")
        await page.click("#sign-in")
        await expect(page.locator("#signin-error")).to_contain_text("unknown or revoked")
        await page.fill("#token", alice.token)
        await page.click("#sign-in")
        await expect(page.locator("#who")).to_have_text("alice@example.com")
        await expect(page.locator("#live")).to_have_attribute("data-state", "live")
        # Not an admin: no admin views, not even by their address.
        await expect(page.locator("#admin-nav")).to_be_hidden()
        await page.evaluate("location.hash = '#/queues'")
        await expect(page.locator("#app-view")).to_be_visible()
        await expect(page.locator("#queues-view")).to_be_hidden()
        await page.evaluate("history.replaceState(null, '', location.pathname)")
        await page.evaluate("window.__sameDocument = 'yes'")

        # New executions appear without a reload (status.changed pending over the socket).
        paused = await start(http, alice, "demo")
        await start(http, alice, "too-long")
        await start(http, alice, "steps-3")
        demo = await start(http, alice, "demo")
        rows = page.locator("#rows tr")
        await expect(rows).to_have_count(4)
        row = page.locator(f'#rows tr[data-id="{demo["id"]}"]')
        await expect(row.locator(".badge")).to_have_text("pending")
        await expect(row.locator("td").first).to_have_text(demo["id"][:8])

        # Pause one from its detail pane before any worker runs.
        await page.locator(f'#rows tr[data-id="{paused["id"]}"]').click()
        await expect(page.locator("#d-id")).to_have_text(paused["id"])
        await expect(page.locator("[data-action=resume]")).to_be_disabled()
        await page.click("[data-action=pause]")
        await expect(page.locator("#notice")).to_contain_text("now paused")
        paused_row = page.locator(f'#rows tr[data-id="{paused["id"]}"]')
        await expect(paused_row.locator(".badge")).to_have_text("paused")

        # The worker runs the others; the rows follow live.
        await run_worker(settings)
        await expect(row.locator(".badge")).to_have_text("completed")
        await expect(row.locator(".steps")).to_have_text("3")
        failed = page.locator('#rows tr:has(td:text-is("too-long")) .badge')
        await expect(failed).to_have_text("failed")
        assert await page.evaluate("window.__sameDocument") == "yes", "the page reloaded"
        await expect(paused_row.locator(".badge")).to_have_text("paused")

        # The detail: fields, output and the SSE log, replayed to the end.
        await row.click()
        await expect(page).to_have_url(f"{base}/dashboard#/agents/{demo['id']}")
        log = page.locator("#log")
        await expect(log).to_contain_text("Step 3 completed")
        await expect(log).to_contain_text("stream finished: completed")
        await expect(page.locator("#d-result")).to_contain_text("The note in my workspace says")
        await expect(page.locator("#d-status .badge")).to_have_text("completed")
        for action in ("pause", "resume", "cancel", "kill"):
            await expect(page.locator(f"[data-action={action}]")).to_be_disabled()
        await log.scroll_into_view_if_needed()
        await page.screenshot(path=str(screenshot), animations="disabled")

        # Cancel the paused one; a refused request shows the API's problem detail.
        await paused_row.click()
        await expect(page.locator("#d-id")).to_have_text(paused["id"])
        await expect(page.locator("[data-action=resume]")).to_be_enabled()
        await page.click("[data-action=cancel]")
        await expect(paused_row.locator(".badge")).to_have_text("cancelled")
        await expect(page.locator("[data-action=resume]")).to_be_disabled()
        await page.evaluate("control('resume')")
        await expect(page.locator("#notice")).to_contain_text("Refused:")
        await expect(page.locator("#notice")).to_contain_text("cancelled")

        # Filters ask the API again.
        await page.click('#filters [data-status="completed"]')
        await expect(rows).to_have_count(2)  # demo and steps-3
        await expect(page.locator("#rows .badge")).to_have_text(["completed", "completed"])
        await page.click('#filters [data-status=""]')
        await expect(rows).to_have_count(4)

        # The token survives a reload; signing out forgets it.
        await page.reload()
        await expect(rows).to_have_count(4)
        await page.click("#sign-out")
        await expect(page.locator("#signin-form")).to_be_visible()
        assert await page.evaluate("localStorage.length") == 0
    assert errors == []
    assert screenshot.stat().st_size > 10_000
    assert time.monotonic() - began < 30


def call(name: str, **arguments: object) -> ScriptedTurn:
    return ScriptedTurn(tool_calls=[ScriptedToolCall(name=name, arguments=arguments)])


def scripted(*turns: ScriptedTurn, **overrides: Any) -> AgentTypeSpec:
    return AgentTypeSpec(provider="scripted", api_key_env=None, script=list(turns), **overrides)


@needs_chromium
async def test_dashboard_starts_answers_shows_the_conversation_and_children(
    alice, make_settings, run_worker, tmp_path
):
    from playwright.async_api import expect

    began = time.monotonic()
    update_docs = os.environ.get("AGENTS_UPDATE_SCREENSHOT") == "1"
    screenshot = DOCS_SCREENSHOT if update_docs else tmp_path / "dashboard.png"
    asking = scripted(
        call("ask_user", question="Which colour should the <b>fence</b> be?"),
        ScriptedTurn(content="You chose {last_user_message}."),
        description="Asks for a colour, then paints with it.",
        capabilities=["ask_user"],
    )
    lead = scripted(
        call("spawn_subagents", tasks=[{"subagent": "helper", "prompt": "part 1"}]),
        ScriptedTurn(content="Synthesis: {last_user_message}"),
        capabilities=["subagents"],
        subagents=["helper"],
    )
    helper = scripted(ScriptedTurn(content="finding about {prompt}"))
    keyed = AgentTypeSpec(api_key_env="AGENTS_TEST_MISSING_KEY", description="Needs a key.")
    settings = make_settings(
        agent_types={"asking": asking, "lead": lead, "keyed": keyed}, subagents={"helper": helper}
    )
    errors: list[str] = []
    async with live_api(settings) as base, browser_page(1400, 860, errors) as page:
        await page.goto(f"{base}/dashboard")
        await page.fill("#token", alice.token)
        await page.click("#sign-in")
        await expect(page.locator("#live")).to_have_attribute("data-state", "live")

        # The form: the picker lists every type, those that cannot run here disabled.
        await page.click("#new-execution")
        picker = page.locator("#start-type")
        keyed_option = picker.locator('option[value="keyed"]')
        await expect(keyed_option).to_be_disabled()
        await expect(keyed_option).to_contain_text("AGENTS_TEST_MISSING_KEY")
        await expect(picker).to_have_value("demo")
        info = page.locator("#type-info")
        await expect(info).to_contain_text("Writes the prompt to note.txt")
        await expect(info).to_contain_text("write_file")
        await expect(info).to_contain_text("agents-default")
        await expect(info).to_contain_text("10 steps")
        await picker.select_option("lead")
        await expect(info).to_contain_text("spawn_subagents")
        await expect(info).to_contain_text("helper")

        # The API's refusal shows its problem detail (the option forced on for the test).
        await keyed_option.evaluate("option => { option.disabled = false; }")
        await picker.select_option("keyed")
        await page.fill("#start-prompt", "hello")
        await page.click("#start")
        await expect(page.locator("#start-error")).to_contain_text("cannot run")
        await expect(page.locator("#rows tr")).to_have_count(0)

        async def start_from_form(agent_type: str, prompt: str) -> str:
            await picker.select_option(agent_type)
            await page.fill("#start-prompt", prompt)
            await page.click("#start")
            await expect(page.locator("#d-type")).to_have_text(agent_type)
            await expect(page.locator("#start-prompt")).to_have_value("")
            execution_id = await page.locator("#d-id").text_content()
            assert execution_id
            await expect(page.locator(f'#rows tr[data-id="{execution_id}"]')).to_have_count(1)
            return execution_id

        asking_id = await start_from_form("asking", "paint the fence")
        lead_id = await start_from_form("lead", "research it")
        demo_id = await start_from_form("demo", "paint the fence")
        await expect(page.locator("#start-error")).to_be_hidden()
        await expect(page.locator("#rows tr")).to_have_count(3)
        await expect(page.locator("#d-status .badge")).to_have_text("pending")

        # A worker runs them all; the open detail and its conversation follow live.
        await run_worker(settings)
        demo_row = page.locator(f'#rows tr[data-id="{demo_id}"]')
        await expect(demo_row.locator(".badge")).to_have_text("completed")
        await expect(demo_row.locator(".steps")).to_have_text("3")
        await expect(page.locator("#d-status .badge")).to_have_text("completed")
        await expect(page.locator("#d-result")).to_contain_text(
            "The note in my workspace says: paint the fence"
        )
        conversation = page.locator("#conversation")
        await expect(conversation.locator(".msg-assistant").last).to_contain_text(
            "The note in my workspace says"
        )
        await expect(conversation.locator(".msg-user")).to_have_text(
            [re.compile("paint the fence")]
        )
        calls = conversation.locator("details.tool-call")
        await expect(calls).to_have_count(2)
        write = calls.first
        await expect(write.locator(".tool-name")).to_have_text("write_file")
        await expect(write.locator(".tool-args")).to_be_hidden()
        await write.locator("summary").click()
        await expect(write.locator(".tool-args")).to_be_visible()
        await expect(write.locator(".tool-args")).to_contain_text('"path": "note.txt"')
        await expect(write.locator(".tool-result")).to_be_visible()
        await expect(calls.nth(1).locator(".tool-args")).to_be_hidden()
        await page.fill("#start-prompt", "Summarise the open issues in the tracker")
        await page.screenshot(path=str(screenshot), animations="disabled")
        await page.click("#start-close")
        await expect(page.locator("#start-form")).to_be_hidden()

        # Answer the question inline; the execution goes on with the answer.
        await page.locator(f'#rows tr[data-id="{asking_id}"]').click()
        answer_form = page.locator("#answer-form")
        await expect(answer_form).to_be_visible()
        question = page.locator("#d-question")
        await expect(question).to_have_text("Which colour should the <b>fence</b> be?")
        assert await question.locator("b").count() == 0
        await page.fill("#answer", "green")
        await page.click("#send-answer")
        await expect(page.locator("#notice")).to_contain_text("now pending")
        await expect(answer_form).to_be_hidden()
        await run_worker(settings)
        await expect(page.locator("#d-status .badge")).to_have_text("completed")
        await expect(page.locator("#d-result")).to_contain_text("You chose green.")
        await expect(conversation.locator(".msg-user").last).to_contain_text("green")

        # The parent lists its child; the child links back to its parent.
        await page.locator(f'#rows tr[data-id="{lead_id}"]').click()
        await expect(page.locator("#d-result")).to_contain_text("finding about part 1")
        children = page.locator("#d-children tr")
        await expect(children).to_have_count(1)
        await expect(children.locator(".badge")).to_have_text("completed")
        child_id = await children.first.get_attribute("data-id")
        await children.locator("a").click()
        await expect(page).to_have_url(f"{base}/dashboard#/agents/{child_id}")
        await expect(page.locator("#d-type")).to_have_text("subagent:helper")
        await expect(conversation).to_contain_text("finding about part 1")
        await page.click("#d-parent a")
        await expect(page.locator("#d-id")).to_have_text(lead_id)
        await expect(page.locator("#d-parent")).to_be_hidden()
        await page.go_back()
        await expect(page.locator("#d-id")).to_have_text(str(child_id))
    assert errors == []
    assert screenshot.stat().st_size > 10_000
    assert time.monotonic() - began < 30


def recent_traffic(user_ids: list[int], now: float) -> list[dict[str, Any]]:
    """An hour of finished executions across the queues, busiest half an hour ago (when they
    also waited longest to start), a few of them failed."""
    rng = random.Random(7)
    types = {
        "agents-default": (4, ["code-assistant", "demo"]),
        "agents-priority": (2, ["code-review"]),
        "agents-long": (1, ["research"]),
    }
    rows = []
    for back in range(60, 0, -1):
        minute = now // 60 * 60 - back * 60
        rush = 1 + 2 * math.exp(-(((back - 30) / 7) ** 2))
        for queue, (base, names) in types.items():
            for _ in range(rng.randint(0, round(base * rush))):
                created = minute + rng.uniform(0, 45)
                started = created + rng.uniform(0.2, 1.5) * rush**2
                longest = 240 if queue == "agents-long" else 40
                finished = min(started + rng.uniform(4, longest), now - 1)
                rows.append(
                    execution_row(
                        rng.choice(user_ids),
                        queue=queue,
                        agent_type=rng.choice(names),
                        status="failed" if rng.random() < 0.06 else "completed",
                        created=created,
                        started=started,
                        finished=finished,
                        steps=rng.randint(2, 14),
                    )
                )
    return rows


async def recent_depths(redis: ArqRedis, now: float) -> None:
    rng = random.Random(11)
    for back in range(60, 0, -1):
        rush = 1 + 2 * math.exp(-(((back - 30) / 7) ** 2))
        depths = {
            "agents-default": round(rng.uniform(0, 3) * rush**2),
            "agents-long": rng.randint(0, 2),
            "agents-priority": round(rng.uniform(0, 1.5) * rush),
        }
        await sample_depths(redis, depths, now // 60 * 60 - back * 60 + 20)


@needs_chromium
async def test_dashboard_admin_mode_filters_and_live_queues_page(
    alice, bob, sessions, redis, make_settings, tmp_path
):
    from playwright.async_api import expect

    began = time.monotonic()
    update_docs = os.environ.get("AGENTS_UPDATE_SCREENSHOT") == "1"
    screenshot = DOCS_QUEUES_SCREENSHOT if update_docs else tmp_path / "queues.png"
    settings = make_settings()
    admin = await make_account(sessions, "ops@example.com", is_admin=True)
    now = time.time()
    rows = recent_traffic([alice.user.id, bob.user.id], now)
    await insert_executions(sessions, rows)
    [failing] = await insert_executions(
        sessions,
        [
            execution_row(
                bob.user.id, queue="agents-long", agent_type="research", status="failed",
                created=now - 8, started=now - 7, finished=now - 2, steps=3,
            )
        ],
    )  # fmt: skip
    await insert_logs(
        sessions,
        failing,
        [
            *[("info", "step_completed", f"Step {n}", {"step_number": n}) for n in (1, 2, 3)],
            ("warning", "warning", "The search tool timed out; retrying", {}),
            ("error", "failed", "Execution failed: ProviderError", {"error": "ProviderError"}),
        ],
    )  # fmt: skip
    await recent_depths(redis, now)
    rows.append({"user_id": bob.user.id, "agent_type": "research", "status": "failed"})
    by_bob = sum(row["user_id"] == bob.user.id for row in rows)
    failed = [row for row in rows if row["status"] == "failed"]
    failed_research = sum(row["agent_type"] == "research" for row in failed)

    errors: list[str] = []
    group = WorkerGroup(settings, settings.queue_names())
    worker = asyncio.create_task(group.run(handle_signals=False))
    try:
        async with (
            live_api(settings) as base,
            httpx.AsyncClient(base_url=base) as http,
            browser_page(1440, 720, errors, console=True) as page,
        ):
            await page.clock.install()
            await page.goto(f"{base}/dashboard")
            await page.fill("#token", admin.token)
            await page.click("#sign-in")
            await expect(page.locator("#who")).to_have_text("ops@example.com · admin")
            await expect(page.locator("#admin-nav")).to_be_visible()
            await expect(page.locator("#empty")).to_be_visible()  # none of their own

            # Every user's executions, newest first, with their owner; the filters ask the API.
            await page.click('#admin-nav a[data-view="all"]')
            await expect(page).to_have_url(f"{base}/dashboard#/all")
            rows_shown = page.locator("#rows tr")
            await expect(rows_shown).to_have_count(50)
            await expect(page.locator("#total")).to_have_text(f"{len(rows):,} executions")
            await expect(rows_shown.first.locator(".col-user")).to_have_text("bob@example.com")
            # Live over admin.agents: a new execution appears on top, and runs to its end.
            started = await start(http, admin, "demo")
            await expect(page.locator("#total")).to_have_text(f"{len(rows) + 1:,} executions")
            await expect(rows_shown.first.locator(".col-user")).to_have_text("ops@example.com")
            await expect(rows_shown.first.locator(".badge")).to_have_text("completed")
            assert await rows_shown.first.get_attribute("data-id") == started["id"]
            await page.click('#filters [data-status="failed"]')
            await expect(page.locator("#total")).to_have_text(f"{len(failed)} executions")
            await page.select_option("#f-type", "research")
            await expect(page.locator("#total")).to_have_text(f"{failed_research} executions")
            await expect(page.locator("#rows .type")).to_have_text(["research"] * failed_research)
            await page.click("#f-clear")
            await page.click('#filters [data-status=""]')
            await page.fill("#f-user", str(bob.user.id))
            await page.locator("#f-user").dispatch_event("change")
            await expect(page.locator("#total")).to_have_text(f"{by_bob:,} executions")
            assert set(await page.locator("#rows .col-user").all_text_contents()) == {
                "bob@example.com"
            }

            # Any execution's stored logs, by level and event type.
            await page.locator(f'#rows tr[data-id="{failing}"]').click()
            await expect(page).to_have_url(f"{base}/dashboard#/all/agents/{failing}")
            await expect(page.locator("#d-fields")).to_contain_text("bob@example.com")
            stored = page.locator("#admin-logs li")
            await expect(stored).to_have_count(5)
            await page.select_option("#l-level", "error")
            await expect(stored).to_have_text([re.compile("ProviderError")])
            await page.select_option("#l-level", "")
            await page.select_option("#l-event", "step_completed")
            await expect(stored).to_have_count(3)
            await expect(page.locator("#admin-logs-count")).to_have_text("· 3 matching")
            await expect(page.locator("#log")).to_contain_text("stream finished: failed")

            # The Queues page: numbers now, an hour of charts, the live workers; it polls.
            await page.click('#admin-nav a[data-view="queues"]')
            await expect(page.locator("#queues-view")).to_be_visible()
            await expect(page.locator("#q-rows tr")).to_have_count(3)
            for chart in ("depth", "throughput", "wait"):
                await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
                await expect(page.locator(f"#chart-{chart}")).to_have_attribute(
                    "data-points", re.compile(r"^[1-9][0-9]+$")
                )
            workers = page.locator("#q-workers tr")
            await expect(workers).to_have_count(1)
            await expect(workers.locator(".pid")).to_have_text(str(os.getpid()))
            long_row = page.locator('#q-rows tr[data-queue="agents-long"]')
            await long_row.click()
            await expect(page.locator("#q-queue")).to_have_value("agents-long")
            await expect(page.locator("#chart-depth .u-legend")).to_contain_text("agents-long")
            await page.select_option("#q-queue", "")
            box = await page.locator("#chart-throughput canvas").bounding_box()
            assert box
            # The cursor shows one minute's values in every chart's legend.
            await page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)
            await page.screenshot(path=str(screenshot), animations="disabled")

            failed_now = long_row.locator("td.bad")
            before = await failed_now.text_content()
            await insert_executions(
                sessions,
                [
                    execution_row(
                        alice.user.id, queue="agents-long", status="failed",
                        created=time.time() - 3, started=time.time() - 2, finished=time.time(),
                    )
                ],
            )  # fmt: skip
            await page.clock.fast_forward(5_000)
            await expect(failed_now).not_to_have_text(before or "")
    finally:
        group.stop()
        await asyncio.wait_for(worker, 10)
    assert errors == []
    assert screenshot.stat().st_size > 10_000
    assert time.monotonic() - began < 30
