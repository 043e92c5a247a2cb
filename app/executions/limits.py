"""Per-tier limits on starting executions: how many may be unfinished at once, and how many may
start per hour. Checked under a per-user advisory lock, so concurrent requests cannot both pass."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import TierLimits
from app.errors import RateLimited
from app.executions.models import Execution
from app.executions.status import TERMINAL

_WINDOW = timedelta(hours=1)
_CONCURRENCY_RETRY_SECONDS = 5
# Keeps this lock's keys apart from any other advisory lock the database may see.
_LOCK_NAMESPACE = 0x61676E74


async def check_start_allowed(
    session: AsyncSession, user_id: int, tier: str, limits: TierLimits
) -> None:
    """Raise :class:`RateLimited` if ``user_id`` may not start another execution now."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:namespace, :user_id)"),
        {"namespace": _LOCK_NAMESPACE, "user_id": user_id % 2**31},
    )
    since = datetime.now(UTC) - _WINDOW
    top_level = and_(Execution.user_id == user_id, Execution.parent_id.is_(None))
    active, started, oldest = (
        await session.execute(
            select(
                func.count().filter(Execution.status.not_in([s.value for s in TERMINAL])),
                func.count().filter(Execution.created_at > since),
                func.min(Execution.created_at).filter(Execution.created_at > since),
            ).where(top_level)
        )
    ).one()
    report = {
        "tier": tier,
        "concurrent": limits.concurrent,
        "per_hour": limits.per_hour,
        "active": active,
        "started_last_hour": started,
    }
    if active >= limits.concurrent:
        raise RateLimited(
            f"The {tier} tier allows {limits.concurrent} unfinished executions at once.",
            headers={"Retry-After": str(_CONCURRENCY_RETRY_SECONDS)},
            limits=report,
        )
    if started >= limits.per_hour:
        wait = (oldest + _WINDOW - datetime.now(UTC)).total_seconds()
        raise RateLimited(
            f"The {tier} tier allows {limits.per_hour} executions per hour.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            limits=report,
        )
