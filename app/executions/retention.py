"""Retention: what finished executions leave behind is deleted after a while.

* log rows of executions that ended more than ``retention.logs_days`` ago;
* executions started over the API that ended more than ``retention.executions_days`` ago, once
  every subagent below them has finished, with those subagents and everything they recorded
  (messages, logs, signals, webhook subscriptions);
* workspace directories of executions that ended more than ``workspace.cleanup_after_days``
  ago, or that no longer exist.

Only terminal executions are touched. Deletes run in batches of ``batch`` rows, one short
statement each, so no lock is held for long and workers keep running meanwhile. ``agents
prune`` runs it on demand (``--dry-run`` counts without deleting); workers run it daily.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.executions.transitions import TERMINAL_SQL

BATCH = 1000

_OLD_LOGS = f"""
    SELECT l.id FROM agent_executions e JOIN agent_logs l ON l.execution_id = e.id
    WHERE e.completed_at < :cutoff AND e.status IN ({TERMINAL_SQL})
"""
# Whole trees: an execution started over the API that ended long enough ago, with every
# subagent below it finished (the cascade deletes them with it). A subagent is never deleted
# on its own: its parent still lists it, and counts it against its limits.
_OLD_EXECUTIONS = f"""
    SELECT e.id FROM agent_executions e
    WHERE e.parent_id IS NULL AND e.completed_at < :cutoff AND e.status IN ({TERMINAL_SQL})
      AND NOT EXISTS (
          WITH RECURSIVE tree AS (
              SELECT c.id, c.status FROM agent_executions c WHERE c.parent_id = e.id
              UNION ALL
              SELECT c.id, c.status FROM agent_executions c JOIN tree ON c.parent_id = tree.id
          )
          SELECT 1 FROM tree WHERE tree.status NOT IN ({TERMINAL_SQL}))
"""
_COUNT_LOGS = text(f"SELECT count(*) FROM ({_OLD_LOGS}) old")
# Log rows are deleted execution by execution, walking the old executions in completion order
# with a cursor, so each statement reads only what it deletes (already emptied executions are
# not read again).
_OLD_EXECUTIONS_AFTER = text(
    f"""
    SELECT id, completed_at FROM agent_executions
    WHERE completed_at < :cutoff AND status IN ({TERMINAL_SQL})
      AND (completed_at, id) > (:after_at, :after_id)
    ORDER BY completed_at, id
    LIMIT :limit
    """
).bindparams(bindparam("after_id", type_=UUID(as_uuid=True)))
_DELETE_LOGS_OF = text(
    """
    DELETE FROM agent_logs WHERE id IN (
        SELECT id FROM agent_logs WHERE execution_id = ANY(:ids) LIMIT :batch)
    """
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))
_EXECUTIONS_PER_PASS = 200
_COUNT_EXECUTIONS = text(f"SELECT count(*) FROM ({_OLD_EXECUTIONS}) old")
_DELETE_EXECUTIONS = text(
    f"DELETE FROM agent_executions WHERE id IN ({_OLD_EXECUTIONS} LIMIT :batch)"
)
# The workspaces still needed: their execution has not ended long enough ago, or a subagent
# sharing them has not.
_NEEDED = f"(status NOT IN ({TERMINAL_SQL}) OR completed_at IS NULL OR completed_at >= :cutoff)"
_WORKSPACES_NEEDED = text(
    f"""
    SELECT id FROM agent_executions WHERE id = ANY(:ids) AND {_NEEDED}
    UNION
    SELECT workspace_id FROM agent_executions WHERE workspace_id = ANY(:ids) AND {_NEEDED}
    """
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


@dataclass
class PruneReport:
    logs: int = 0
    executions: int = 0
    workspaces: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{verb} {self.logs} log rows, {self.executions} executions (with their "
            f"subagents), {self.workspaces} workspace directories"
        )


async def prune(
    db: AsyncEngine, settings: Settings, *, dry_run: bool = False, batch: int = BATCH
) -> PruneReport:
    """Delete what the retention settings say is old (see the module); what was (or would be)
    deleted."""
    now = datetime.now(UTC)
    retention = settings.retention
    logs_cutoff = now - timedelta(days=retention.logs_days)
    executions_cutoff = now - timedelta(days=retention.executions_days)
    workspaces_cutoff = now - timedelta(days=settings.workspace.cleanup_after_days)
    report = PruneReport(dry_run=dry_run)
    if dry_run:
        async with db.connect() as conn:
            report.logs = int(await conn.scalar(_COUNT_LOGS, {"cutoff": logs_cutoff}) or 0)
            report.executions = int(
                await conn.scalar(_COUNT_EXECUTIONS, {"cutoff": executions_cutoff}) or 0
            )
    else:
        report.logs = await _delete_old_logs(db, logs_cutoff, batch)
        report.executions = await _delete_in_batches(
            db, _DELETE_EXECUTIONS, executions_cutoff, batch
        )
    report.workspaces = await _prune_workspaces(
        db, settings.workspace_base, workspaces_cutoff, dry_run, batch
    )
    return report


async def _delete_old_logs(db: AsyncEngine, cutoff: datetime, batch: int) -> int:
    deleted = 0
    after_at, after_id = datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0)
    while True:
        async with db.connect() as conn:
            rows = (
                await conn.execute(
                    _OLD_EXECUTIONS_AFTER,
                    {
                        "cutoff": cutoff,
                        "after_at": after_at,
                        "after_id": after_id,
                        "limit": _EXECUTIONS_PER_PASS,
                    },
                )
            ).all()
        if not rows:
            return deleted
        ids = [row.id for row in rows]
        while True:
            async with db.begin() as conn:
                result = await conn.execute(_DELETE_LOGS_OF, {"ids": ids, "batch": batch})
            if not result.rowcount:
                break
            deleted += result.rowcount
        after_at, after_id = rows[-1].completed_at, rows[-1].id


async def _delete_in_batches(
    db: AsyncEngine, statement: TextClause, cutoff: datetime, batch: int
) -> int:
    """Run ``statement`` until it deletes nothing; how many rows it deleted (not counting what
    the cascade took with them)."""
    deleted = 0
    while True:
        async with db.begin() as conn:
            result = await conn.execute(statement, {"cutoff": cutoff, "batch": batch})
        if not result.rowcount:
            return deleted
        deleted += result.rowcount


async def _prune_workspaces(
    db: AsyncEngine, base: Path, cutoff: datetime, dry_run: bool, batch: int
) -> int:
    """Remove workspace directories nobody needs any more: their execution ended before
    ``cutoff`` (and no unfinished subagent shares them) or is gone."""
    names = await asyncio.to_thread(_workspace_directories, base)
    removed = 0
    ids = list(names)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        async with db.connect() as conn:
            rows = await conn.execute(_WORKSPACES_NEEDED, {"ids": chunk, "cutoff": cutoff})
            keep = set(rows.scalars())
        for execution_id in chunk:
            if execution_id in keep:
                continue
            removed += 1
            if not dry_run:
                await asyncio.to_thread(shutil.rmtree, names[execution_id], True)
    return removed


def _workspace_directories(base: Path) -> dict[uuid.UUID, Path]:
    """The directories under ``base`` named like an execution."""
    if not base.is_dir():
        return {}
    found = {}
    for entry in base.iterdir():
        try:
            execution_id = uuid.UUID(entry.name)
        except ValueError:
            continue  # not a workspace (a probe directory, a stray file)
        if entry.is_dir() and not entry.is_symlink():
            found[execution_id] = entry
    return found
