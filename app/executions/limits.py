"""Per-tier limits on starting executions: how many may be unfinished at once, and how many may
start per hour. Checked under a per-user advisory lock, so concurrent requests cannot both pass."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import TierLimits
from app.errors import RateLimited
from app.executions import repository

_WINDOW = timedelta(hours=1)
_CONCURRENCY_RETRY_SECONDS = 5


async def check_start_allowed(
    session: AsyncSession, user_id: int, tier: str, limits: TierLimits
) -> None:
    """Raise :class:`RateLimited` if ``user_id`` may not start another execution now."""
    # Two statements, not one: a statement sees the rows committed when it started, so the
    # count must start after the lock is held.
    await repository.lock_user_starts(session, user_id)
    now = datetime.now(UTC)
    usage = await repository.start_usage(session, user_id, since=now - _WINDOW)
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
        assert usage.oldest is not None  # at least one was started in the window
        wait = (usage.oldest + _WINDOW - now).total_seconds()
        raise RateLimited(
            f"The {tier} tier allows {limits.per_hour} executions per hour.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            limits=report,
        )
