from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.auth.dependencies import CurrentUser
from app.auth.service import get_user
from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import Forbidden, NotFound, Unauthorized
from app.events.schemas import DeliverEvent, EventDelivery
from app.events.service import deliver_event, delivery_response

router = APIRouter(prefix="/api/events", tags=["events"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    **Unauthorized.openapi(),
    **Forbidden.openapi(),
    **NotFound.openapi(),
}


@router.post(
    "",
    response_model=EventDelivery,
    operation_id="deliverEvent",
    summary="Deliver an event to your executions waiting for it",
    responses=_RESPONSES,
)
async def post_event(
    body: DeliverEvent,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> EventDelivery:
    """Wakes every execution of the user waiting for ``event_type`` (and ``key``, when the
    waiter gave one); an event nobody waits for is kept. Admins may deliver for ``user_id``."""
    owner = user.id
    if body.user_id is not None and body.user_id != user.id:
        if not user.is_admin:
            raise Forbidden("Only admins deliver events for other users.")
        if await get_user(session, body.user_id) is None:
            raise NotFound(f"No user {body.user_id}.")
        owner = body.user_id
    delivered = await deliver_event(
        session,
        redis,
        settings,
        user_id=owner,
        event_type=body.event_type,
        key=body.key,
        payload=body.payload,
    )
    return delivery_response(delivered)
