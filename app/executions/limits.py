"""Per-tier limits on starting executions: how many may be unfinished at once, and how many may
start per hour. Checked under a per-user advisory lock, so concurrent requests cannot both pass."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import TierLimits
from app.errors import RateLimited
from app.executions.status import TERMINAL

_WINDOW = timedelta(hours=1)
_CONCURRENCY_RETRY_SECONDS = 5
# Keeps this lock's keys apart from any other advisory lock the database may see.
_LOCK_NAMESPACE = 0x61676E74

# Two statements, not one: a statement sees the rows committed when it started, so the count must
# start after the lock is held.
_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, :key)")
_USAGE = text(
    f"""
    SELECT count(*) FILTER (WHERE status NOT IN ({", ".join(f"'{s}'" for s in sorted(TERMINAL))}))
               AS active,
           count(*) FILTER (WHERE created_at > :since) AS started,
           min(created_at) FILTER (WHERE created_at > :since) AS oldest
    FROM agent_executions
    WHERE user_id = :user_id AND parent_id IS NULL
    """
).bindparams(
    bindparam("user_id", type_=BigInteger), bindparam("since", type_=DateTime(timezone=True))
)


async def check_start_allowed(
    session: AsyncSession, user_id: int, tier: str, limits: TierLimits
) -> None:
    """Raise :class:`RateLimited` if ``user_id`` may not start another execution now."""
    await session.execute(_LOCK, {"namespace": _LOCK_NAMESPACE, "key": user_id % 2**31})
    now = datetime.now(UTC)
    usage = (await session.execute(_USAGE, {"user_id": user_id, "since": now - _WINDOW})).one()
    report = {
        "tier": tier,
        "concurrent": limits.concurrent,
        "per_hour": limits.per_hour,
        "active": usage.active,
        "started_last_hour": usage.started,
    }
    if usage.active >= limits.concurrent:
        raise RateLimited(
            f"The {tier} tier allows {limits.concurrent} unfinished executions at once.",
            headers={"Retry-After": str(_CONCURRENCY_RETRY_SECONDS)},
            limits=report,
        )
    if usage.started >= limits.per_hour:
        wait = (usage.oldest + _WINDOW - now).total_seconds()
        raise RateLimited(
            f"The {tier} tier allows {limits.per_hour} executions per hour.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            limits=report,
        )
