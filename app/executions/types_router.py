"""``GET /api/agent-types``: what a user may start."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.deps import SettingsDep
from app.errors import Unauthorized
from app.executions import service
from app.executions.schemas import AgentTypeList

router = APIRouter(prefix="/api/agent-types", tags=["executions"])


@router.get(
    "",
    response_model=AgentTypeList,
    operation_id="listAgentTypes",
    summary="The agent types you may start",
    responses={**Unauthorized.openapi()},
)
async def list_agent_types(user: CurrentUser, settings: SettingsDep) -> AgentTypeList:
    return AgentTypeList(items=service.agent_types(settings))
