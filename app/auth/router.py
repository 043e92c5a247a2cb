from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.dependencies import CurrentUser
from app.deps import SessionDep, SettingsDep
from app.errors import Unauthorized
from app.executions.limits import Quota, quota

router = APIRouter(tags=["users"])


class Me(BaseModel):
    id: int
    name: str
    email: str
    tier: str
    is_admin: bool


_ME_RESPONSES: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi()}


@router.get(
    "/api/me",
    response_model=Me,
    operation_id="getCurrentUser",
    summary="The user the API token belongs to",
    responses=_ME_RESPONSES,
)
async def get_current_user(user: CurrentUser) -> Me:
    return Me(id=user.id, name=user.name, email=user.email, tier=user.tier, is_admin=user.is_admin)


@router.get(
    "/api/me/limits",
    response_model=Quota,
    operation_id="getCurrentUserLimits",
    summary="Your tier's limits on starting executions, and how much of them is used",
    responses=_ME_RESPONSES,
)
async def get_current_user_limits(
    user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Quota:
    return await quota(session, user.id, user.tier, settings.tier_limits(user.tier))
