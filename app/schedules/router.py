from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.auth.dependencies import CurrentUser
from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import Unauthorized, UnknownAgentType
from app.schedules import service
from app.schedules.schemas import ScheduleCreate, ScheduleOut, SchedulePage, ScheduleUpdate
from app.schedules.service import ScheduleNameTaken, ScheduleNotFound

router = APIRouter(prefix="/api/schedules", tags=["schedules"])

_AUTH: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi()}
_ONE: dict[int | str, dict[str, Any]] = {**_AUTH, **ScheduleNotFound.openapi()}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    operation_id="createSchedule",
    summary="Start an agent on a cron schedule",
    responses={**_AUTH, **UnknownAgentType.openapi(), **ScheduleNameTaken.openapi()},
)
async def create_schedule(
    body: ScheduleCreate,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> ScheduleOut:
    schedule = await service.create_schedule(session, redis, settings, user, body)
    response.headers["Location"] = f"/api/schedules/{schedule.id}"
    return ScheduleOut.model_validate(schedule)


@router.get(
    "",
    response_model=SchedulePage,
    operation_id="listSchedules",
    summary="Your schedules by name (an admin's list has everybody's)",
    responses=_AUTH,
)
async def list_schedules(
    user: CurrentUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 50,
) -> SchedulePage:
    items, total = await service.list_schedules(session, user, page=page, per_page=per_page)
    return SchedulePage(
        items=[ScheduleOut.model_validate(s) for s in items],
        total=total,
        page=page,
        per_page=per_page,
    )


@router.get(
    "/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="getSchedule",
    summary="One schedule: its next fire, its last execution, its last skipped fire",
    responses=_ONE,
)
async def get_schedule(schedule_id: int, user: CurrentUser, session: SessionDep) -> ScheduleOut:
    schedule = await service.get_visible_schedule(session, user, schedule_id)
    return ScheduleOut.model_validate(schedule)


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleOut,
    operation_id="updateSchedule",
    summary="Change a schedule (the next fire is computed again)",
    responses={**_ONE, **UnknownAgentType.openapi()},
)
async def update_schedule(
    schedule_id: int,
    body: ScheduleUpdate,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> ScheduleOut:
    schedule = await service.get_visible_schedule(session, user, schedule_id)
    updated = await service.update_schedule(session, redis, settings, schedule, body)
    return ScheduleOut.model_validate(updated)


@router.delete(
    "/{schedule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteSchedule",
    summary="Delete a schedule (executions it started are kept)",
    responses=_ONE,
)
async def delete_schedule(schedule_id: int, user: CurrentUser, session: SessionDep) -> Response:
    schedule = await service.get_visible_schedule(session, user, schedule_id)
    await service.delete_schedule(session, schedule)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
