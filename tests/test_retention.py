"""Retention (``agents prune``) and ``agents recover-stuck``, run as the real commands."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.fixtures.api import api_client
from tests.fixtures.executions import load, start
from tests.fixtures.processes import agents, service_env


async def age(sessions, execution_id: str, days: float, *, status: str | None = None) -> None:
    """Make an execution look as if it ended ``days`` ago (with ``status``, if given)."""
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE agent_executions SET completed_at = now() - make_interval(days => :days), "
                "status = coalesce(:status, status) WHERE id = :id"
            ),
            {"days": days, "status": status, "id": uuid.UUID(execution_id)},
        )
        await session.commit()


async def counts(sessions, execution_id: str) -> tuple[int, int, int]:
    """Rows of the execution, its logs and its messages."""
    async with sessions() as session:
        row = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM agent_executions WHERE id = :id), "
                    "(SELECT count(*) FROM agent_logs WHERE execution_id = :id), "
                    "(SELECT count(*) FROM agent_messages WHERE execution_id = :id)"
                ),
                {"id": uuid.UUID(execution_id)},
            )
        ).one()
    return (row[0], row[1], row[2])


async def test_prune_deletes_only_what_finished_long_enough_ago(
    settings, tmp_path, alice, sessions, run_worker
):
    async with api_client(settings) as http:
        old = (await start(http, alice, "steps-3"))["id"]
        recent = (await start(http, alice, "steps-3"))["id"]
        fresh = (await start(http, alice, "steps-3"))["id"]
        await run_worker()
        unfinished = (await start(http, alice, "steps-3"))["id"]  # stays pending
    await age(sessions, old, 40)
    await age(sessions, recent, 10)
    # An unfinished execution is never touched, however old its rows look.
    await age(sessions, unfinished, 400)
    base = settings.workspace_base
    orphan = base / str(uuid.uuid4())
    orphan.mkdir(parents=True)
    (base / "not-a-workspace").mkdir()
    (base / unfinished).mkdir()
    before = {e: await counts(sessions, e) for e in (old, recent, fresh, unfinished)}
    env = service_env(settings, tmp_path)

    dry = agents("prune", "--dry-run", env=env)
    after_dry = {e: await counts(sessions, e) for e in before}
    pruned = agents("prune", env=env)
    again = agents("prune", env=env)

    assert dry.returncode == 0, dry.stderr
    assert after_dry == before
    assert pruned.returncode == 0, pruned.stderr
    logs_deleted = before[old][1] + before[recent][1]
    assert dry.stdout.strip() == (
        f"would delete {logs_deleted} log rows, 1 executions (with their subagents), "
        "3 workspace directories"
    )
    assert pruned.stdout.strip() == (
        f"deleted {logs_deleted} log rows, 1 executions (with their subagents), "
        "3 workspace directories"
    )
    assert again.stdout.strip() == (
        "deleted 0 log rows, 0 executions (with their subagents), 0 workspace directories"
    )
    assert await counts(sessions, old) == (0, 0, 0)
    assert await counts(sessions, recent) == (1, 0, before[recent][2])  # logs go first
    assert await counts(sessions, fresh) == before[fresh]
    assert await counts(sessions, unfinished) == before[unfinished]
    # Workspaces go after 7 days: the recent one's too, and the one nobody owns.
    assert sorted(p.name for p in base.iterdir()) == sorted([fresh, unfinished, "not-a-workspace"])


async def test_prune_deletes_subagents_with_their_parent_but_keeps_a_shared_workspace_in_use(
    settings, tmp_path, alice, sessions
):
    async with api_client(settings) as http:
        parent = (await start(http, alice, "steps-3"))["id"]
        child = (await start(http, alice, "steps-3"))["id"]
        lone = (await start(http, alice, "steps-3"))["id"]
        sharer = (await start(http, alice, "steps-3"))["id"]
    async with sessions() as session:
        await session.execute(
            text("UPDATE agent_executions SET parent_id = :p, depth = 1 WHERE id = :c"),
            {"p": uuid.UUID(parent), "c": uuid.UUID(child)},
        )
        # An unfinished subagent still works in the lone execution's workspace.
        await session.execute(
            text("UPDATE agent_executions SET workspace_id = :w WHERE id = :s"),
            {"w": uuid.UUID(lone), "s": uuid.UUID(sharer)},
        )
        await session.commit()
    for execution_id in (parent, child, lone):
        await age(sessions, execution_id, 40, status="completed")
    for execution_id in (parent, lone):
        (settings.workspace_base / execution_id).mkdir(parents=True)

    pruned = agents("prune", env=service_env(settings, tmp_path))

    assert pruned.returncode == 0, pruned.stderr
    # The parent (its child goes with it) and the lone one.
    assert "2 executions (with their subagents), 1 workspace directories" in pruned.stdout
    assert (await counts(sessions, parent))[0] == 0
    assert (await counts(sessions, child))[0] == 0
    assert (settings.workspace_base / lone).is_dir()
    assert not (settings.workspace_base / parent).exists()


async def test_prune_never_deletes_a_subagent_whose_parent_has_not_finished(
    settings, tmp_path, alice, sessions
):
    async with api_client(settings) as http:
        parent = (await start(http, alice, "steps-3"))["id"]  # pending: unfinished
        child = (await start(http, alice, "steps-3"))["id"]
    async with sessions() as session:
        await session.execute(
            text("UPDATE agent_executions SET parent_id = :p, depth = 1 WHERE id = :c"),
            {"p": uuid.UUID(parent), "c": uuid.UUID(child)},
        )
        await session.commit()
    await age(sessions, child, 40, status="completed")

    pruned = agents("prune", env=service_env(settings, tmp_path))

    assert pruned.returncode == 0, pruned.stderr
    assert (await counts(sessions, child))[0] == 1
    assert (await counts(sessions, parent))[0] == 1


async def test_recover_stuck_refuses_a_stale_after_the_heartbeats_cannot_meet(settings, tmp_path):
    env = service_env(settings, tmp_path, AGENTS_WORKER__HEARTBEAT_INTERVAL="10")

    result = agents("recover-stuck", "--stale-after", "15", env=env)

    assert result.returncode == 2
    assert "twice worker.heartbeat_interval" in result.stderr


async def test_recover_stuck_runs_the_sweep_once(settings, tmp_path, alice, sessions):
    async with api_client(settings) as http:
        stuck = (await start(http, alice, "steps-3"))["id"]
    async with sessions() as session:
        await session.execute(
            text(
                "UPDATE agent_executions SET status = 'running', lease = 1, worker_id = 'gone:1', "
                "heartbeat_at = now() - interval '10 minutes' WHERE id = :id"
            ),
            {"id": uuid.UUID(stuck)},
        )
        await session.commit()

    result = agents("recover-stuck", "--stale-after", "30", env=service_env(settings, tmp_path))

    assert result.returncode == 0, result.stderr
    assert "recovered 1" in result.stdout
    # Re-queued from its last committed step, under a recovery job of its own.
    assert (await load(sessions, stuck)).recovery_count == 1
