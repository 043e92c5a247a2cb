"""Per-tier limits on starting executions: how many may be unfinished at once, and how many may
start per hour. Checked under a per-user advisory lock, so concurrent requests cannot both pass;
``GET /api/me/limits`` and every 429 report the same :class:`Quota`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import TierLimits
from app.errors import RateLimited
from app.executions import repository

_WINDOW = timedelta(hours=1)
_CONCURRENCY_RETRY_SECONDS = 5


class Usage(BaseModel):
    used: int
    limit: int


class HourlyUsage(Usage):
    next_slot_at: datetime | None = Field(
        description="When the oldest start of the past hour stops counting (none: no start)."
    )


class Quota(BaseModel):
    """A user's starts against their tier's limits (subagents do not count)."""

    tier: str
    concurrent: Usage = Field(description="Unfinished executions (scheduled ones excepted).")
    hourly: HourlyUsage = Field(description="Executions started in the past hour.")
    retry_after_seconds: int | None = Field(
        default=None, description="When another start is allowed, if it is not now."
    )


async def quota(session: AsyncSession, user_id: int, tier: str, limits: TierLimits) -> Quota:
    """The user's usage now, and how long until a start is allowed if it is not."""
    now = datetime.now(UTC)
    usage = await repository.start_usage(session, user_id, since=now - _WINDOW)
    next_slot = usage.oldest + _WINDOW if usage.oldest is not None else None
    retry_after = None
    if usage.active >= limits.concurrent:
        retry_after = _CONCURRENCY_RETRY_SECONDS
    if usage.started >= limits.per_hour and next_slot is not None:
        retry_after = max(retry_after or 0, math.ceil((next_slot - now).total_seconds()), 1)
    return Quota(
        tier=tier,
        concurrent=Usage(used=usage.active, limit=limits.concurrent),
        hourly=HourlyUsage(used=usage.started, limit=limits.per_hour, next_slot_at=next_slot),
        retry_after_seconds=retry_after,
    )


async def check_start_allowed(
    session: AsyncSession, user_id: int, tier: str, limits: TierLimits
) -> None:
    """Raise :class:`RateLimited` if ``user_id`` may not start another execution now."""
    # Two statements, not one: a statement sees the rows committed when it started, so the
    # count must start after the lock is held.
    await repository.lock_user_starts(session, user_id)
    report = await quota(session, user_id, tier, limits)
    if report.retry_after_seconds is None:
        return
    if report.concurrent.used >= limits.concurrent:
        message = f"The {tier} tier allows {limits.concurrent} unfinished executions at once."
    else:
        message = f"The {tier} tier allows {limits.per_hour} executions per hour."
    raise RateLimited(
        message,
        headers={"Retry-After": str(report.retry_after_seconds)},
        limits=report.model_dump(mode="json"),
    )
