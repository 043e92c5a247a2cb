from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.dependencies import CurrentUser
from app.errors import Unauthorized

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
