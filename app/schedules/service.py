"""Cron schedules: each fire starts one execution of the schedule's agent type for its owner.

A fire is recorded under the key (schedule, fire time) in the same transaction as the start, so
two workers, or a worker and a restart, never fire a slot twice; the schedule row is locked
while it fires and other workers skip it. After downtime a schedule fires once for the slot it
missed, not once per missed slot, then continues from now. A fire the owner's tier refuses is
recorded as skipped, with the reason, on the schedule and the fire.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.auth.models import User
from app.auth.service import get_user, get_user_by_email
from app.config import ScheduleConfig, Settings
from app.db import after_commit, engine_transaction
from app.errors import AppError, Conflict, NotFound, UnknownAgentType
from app.executions.jobs import enqueue_schedule_timer
from app.executions.service import start_execution
from app.schedules import repository
from app.schedules.clock import next_fire
from app.schedules.models import Schedule
from app.schedules.schemas import ScheduleCreate, ScheduleUpdate

log = logging.getLogger(__name__)

_FIRES_PER_CALL = 100


class ScheduleNotFound(NotFound):
    type = "schedule-not-found"
    title = "Schedule not found"


class ScheduleNameTaken(Conflict):
    type = "schedule-name-taken"
    title = "A schedule with this name exists"


def _check_agent_type(settings: Settings, agent_type: str) -> None:
    if agent_type not in settings.agent_types:
        known = sorted(settings.agent_types)
        raise UnknownAgentType(
            f"Unknown agent type {agent_type!r}; known types: {', '.join(known)}.",
            known_agent_types=known,
        )


def _plan(session: AsyncSession, redis: ArqRedis, settings: Settings, schedule: Schedule) -> None:
    """Set the next fire from now and, after commit, the timer job that makes it punctual."""
    schedule.next_run_at = (
        next_fire(schedule.cron, schedule.timezone, datetime.now(UTC)) if schedule.enabled else None
    )
    schedule.updated_at = datetime.now(UTC)
    at, schedule_id = schedule.next_run_at, schedule.id

    async def arm() -> None:
        if at is not None:
            await enqueue_schedule_timer(redis, schedule_id, at, settings.queues.default)

    after_commit(session, arm)


async def create_schedule(
    session: AsyncSession, redis: ArqRedis, settings: Settings, user: User, data: ScheduleCreate
) -> Schedule:
    _check_agent_type(settings, data.agent_type)
    if await repository.get_by_name(session, user.id, data.name) is not None:
        raise ScheduleNameTaken(f"You have a schedule named {data.name!r}.")
    schedule = Schedule(
        user_id=user.id,
        name=data.name,
        cron=data.cron,
        timezone=data.timezone,
        agent_type=data.agent_type,
        input=data.input.model_dump(),
        metadata_=data.metadata,
        enabled=data.enabled,
    )
    try:
        async with session.begin_nested():
            await repository.add(session, schedule)
    except IntegrityError:  # created by a concurrent request since the check above
        raise ScheduleNameTaken(f"You have a schedule named {data.name!r}.") from None
    _plan(session, redis, settings, schedule)
    return schedule


async def get_visible_schedule(session: AsyncSession, user: User, schedule_id: int) -> Schedule:
    """The schedule if ``user`` owns it or is an admin; otherwise it does not exist for them."""
    schedule = await repository.get(
        session, schedule_id, user_id=None if user.is_admin else user.id
    )
    if schedule is None:
        raise ScheduleNotFound(f"No schedule {schedule_id}.")
    return schedule


async def list_schedules(
    session: AsyncSession, user: User, *, page: int, per_page: int
) -> tuple[list[Schedule], int]:
    """The user's schedules; an admin's list has everybody's."""
    owner = None if user.is_admin else user.id
    return await repository.page(session, user_id=owner, page=page, per_page=per_page)


async def update_schedule(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    schedule: Schedule,
    patch: ScheduleUpdate,
) -> Schedule:
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    if changes.get("agent_type") is not None:
        _check_agent_type(settings, changes["agent_type"])
    for field, value in changes.items():
        if value is not None:
            setattr(schedule, "metadata_" if field == "metadata" else field, value)
    _plan(session, redis, settings, schedule)
    return schedule


async def delete_schedule(session: AsyncSession, schedule: Schedule) -> None:
    await repository.delete(session, schedule)


async def fire_due_schedules(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> int:
    """Fire every schedule that is due, each in its own transaction; how many fired."""
    fired = 0
    for _ in range(_FIRES_PER_CALL):
        async with engine_transaction(db) as session:
            schedule = await repository.lock_next_due(session, datetime.now(UTC))
            if schedule is None:
                break
            fired += await _fire(session, redis, settings, schedule)
    return fired


async def _fire(
    session: AsyncSession, redis: ArqRedis, settings: Settings, schedule: Schedule
) -> int:
    fire_time = schedule.next_run_at
    assert fire_time is not None
    now = datetime.now(UTC)
    # The next slot after now: slots missed while everything was down fire once, here.
    schedule.next_run_at = next_fire(schedule.cron, schedule.timezone, max(now, fire_time))
    schedule.updated_at = now
    next_at, schedule_id = schedule.next_run_at, schedule.id

    async def arm() -> None:
        await enqueue_schedule_timer(redis, schedule_id, next_at, settings.queues.default)

    after_commit(session, arm)
    if not await repository.claim_fire(session, schedule.id, fire_time):
        return 0
    schedule.last_fired_at = fire_time
    owner = await get_user(session, schedule.user_id)
    assert owner is not None  # a user's schedules go with the user
    metadata = {
        **schedule.metadata_,
        "schedule": {"id": schedule.id, "name": schedule.name, "fire_time": fire_time.isoformat()},
    }
    try:
        # A refusal (the tier's limits, a type no longer configured) comes before any write.
        execution = await start_execution(
            session, redis, settings, owner, schedule.agent_type, dict(schedule.input), metadata
        )
    except AppError as exc:
        reason = str(exc)
        schedule.last_skip = {"fire_time": fire_time.isoformat(), "reason": reason}
        await repository.finish_fire(
            session, schedule.id, fire_time, execution_id=None, skipped_reason=reason
        )
        log.warning("schedule %s skipped its %s fire: %s", schedule.id, fire_time, reason)
        return 1
    schedule.last_execution_id = execution.id
    await repository.finish_fire(
        session, schedule.id, fire_time, execution_id=execution.id, skipped_reason=None
    )
    return 1


async def sync_configured_schedules(db: AsyncEngine, redis: ArqRedis, settings: Settings) -> None:
    """Make the ``[schedules.NAME]`` tables of the configuration the schedules marked as
    configured: create, update, and delete those no longer configured."""
    async with engine_transaction(db) as session:
        configured: set[tuple[int, str]] = set()
        for name, config in settings.schedules.items():
            user = await get_user_by_email(session, config.user)
            if user is None:
                log.error("schedule %r: no user %s; not synchronised", name, config.user)
                continue
            configured.add((user.id, name))
            await _sync_one(session, redis, settings, user, name, config)
        for schedule in await repository.configured(session):
            if (schedule.user_id, schedule.name) not in configured:
                await repository.delete(session, schedule)


async def _sync_one(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    user: User,
    name: str,
    config: ScheduleConfig,
) -> None:
    fields = {
        "cron": config.cron,
        "timezone": config.timezone,
        "agent_type": config.agent_type,
        "input": config.input,
        "metadata_": config.metadata,
        "enabled": config.enabled,
    }
    schedule = await repository.get_by_name(session, user.id, name)
    if schedule is None:
        schedule = await repository.add(
            session, Schedule(user_id=user.id, name=name, from_config=True, **fields)
        )
        _plan(session, redis, settings, schedule)
        return
    timing = (schedule.cron, schedule.timezone, schedule.enabled)
    for field, value in fields.items():
        setattr(schedule, field, value)
    schedule.from_config = True
    if timing != (schedule.cron, schedule.timezone, schedule.enabled) or (
        schedule.enabled and schedule.next_run_at is None
    ):
        _plan(session, redis, settings, schedule)
