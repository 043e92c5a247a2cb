"""The statements behind cron schedules."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.schedules.models import Schedule, ScheduleFire


async def add(session: AsyncSession, schedule: Schedule) -> Schedule:
    session.add(schedule)
    await session.flush()
    return schedule


async def get(session: AsyncSession, schedule_id: int, *, user_id: int | None) -> Schedule | None:
    """One schedule; with ``user_id``, only if that user owns it."""
    query = select(Schedule).where(Schedule.id == schedule_id)
    if user_id is not None:
        query = query.where(Schedule.user_id == user_id)
    schedule: Schedule | None = await session.scalar(query)
    return schedule


async def get_by_name(session: AsyncSession, user_id: int, name: str) -> Schedule | None:
    schedule: Schedule | None = await session.scalar(
        select(Schedule).where(Schedule.user_id == user_id, Schedule.name == name)
    )
    return schedule


async def page(
    session: AsyncSession, *, user_id: int | None, page: int, per_page: int
) -> tuple[list[Schedule], int]:
    """A page of schedules by name (a user's, or with ``user_id`` None everybody's)."""
    where = [] if user_id is None else [Schedule.user_id == user_id]
    total = await session.scalar(select(func.count()).select_from(Schedule).where(*where))
    rows = await session.scalars(
        select(Schedule)
        .where(*where)
        .order_by(Schedule.name, Schedule.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return list(rows), int(total or 0)


async def delete(session: AsyncSession, schedule: Schedule) -> None:
    await session.delete(schedule)


async def lock_next_due(session: AsyncSession, now: datetime) -> Schedule | None:
    """The enabled schedule due longest ago, locked; one another worker holds is skipped."""
    schedule: Schedule | None = await session.scalar(
        select(Schedule)
        .where(Schedule.enabled, Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return schedule


async def claim_fire(session: AsyncSession, schedule_id: int, fire_time: datetime) -> bool:
    """Record the fire; False if it happened already (the key is schedule and fire time)."""
    inserted = await session.scalar(
        insert(ScheduleFire)
        .values(schedule_id=schedule_id, fire_time=fire_time)
        .on_conflict_do_nothing()
        .returning(ScheduleFire.schedule_id)
    )
    return inserted is not None


async def finish_fire(
    session: AsyncSession,
    schedule_id: int,
    fire_time: datetime,
    *,
    execution_id: uuid.UUID | None,
    skipped_reason: str | None,
) -> None:
    await session.execute(
        update(ScheduleFire)
        .where(ScheduleFire.schedule_id == schedule_id, ScheduleFire.fire_time == fire_time)
        .values(execution_id=execution_id, skipped_reason=skipped_reason)
    )


async def configured(session: AsyncSession) -> list[Schedule]:
    """The schedules that come from the configuration file."""
    return list(await session.scalars(select(Schedule).where(Schedule.from_config)))
