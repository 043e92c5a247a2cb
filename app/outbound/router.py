from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from app.auth.dependencies import CurrentUser
from app.deps import SessionDep, SettingsDep
from app.errors import InvalidRequest, Unauthorized
from app.outbound import repository, service
from app.outbound.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionOut,
)
from app.outbound.service import SubscriptionNotFound

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])

_AUTH: dict[int | str, dict[str, Any]] = {**Unauthorized.openapi()}
_ONE: dict[int | str, dict[str, Any]] = {**_AUTH, **SubscriptionNotFound.openapi()}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionCreated,
    operation_id="createWebhook",
    summary="Be told, by signed webhook, when any of your executions reaches a status",
    responses={**_AUTH, **InvalidRequest.openapi()},
)
async def create_webhook(
    body: SubscriptionCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> SubscriptionCreated:
    created = await service.create_subscription(
        session,
        settings,
        user,
        url=body.url,
        events=list(body.events),
        description=body.description,
    )
    out = SubscriptionOut.model_validate(created.subscription).model_dump()
    return SubscriptionCreated(**out, secret=created.secret)


@router.get(
    "",
    response_model=list[SubscriptionOut],
    operation_id="listWebhooks",
    summary="Your webhook subscriptions",
    responses=_AUTH,
)
async def list_webhooks(user: CurrentUser, session: SessionDep) -> list[SubscriptionOut]:
    rows = await repository.list_subscriptions(session, user.id)
    return [SubscriptionOut.model_validate(row) for row in rows]


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteWebhook",
    summary="Delete a webhook subscription (its pending deliveries stop)",
    responses=_ONE,
)
async def delete_webhook(subscription_id: int, user: CurrentUser, session: SessionDep) -> Response:
    subscription = await service.get_visible_subscription(session, user, subscription_id)
    await repository.delete_subscription(session, subscription)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{subscription_id}/deliveries",
    response_model=DeliveryPage,
    operation_id="listWebhookDeliveries",
    summary="A subscription's deliveries, newest first, with every attempt",
    responses=_ONE,
)
async def list_deliveries(
    subscription_id: int,
    user: CurrentUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DeliveryPage:
    subscription = await service.get_visible_subscription(session, user, subscription_id)
    items, total = await repository.page_deliveries(
        session, subscription.id, page=page, per_page=per_page
    )
    return DeliveryPage(
        items=[
            DeliveryOut(
                id=d.id,
                message_id=d.message_id,
                execution_id=d.execution_id,
                event_type=d.event_type,
                status=d.status,  # type: ignore[arg-type]
                attempts=[AttemptOut.model_validate(a) for a in attempts],
                next_attempt_at=d.next_attempt_at,
                created_at=d.created_at,
                delivered_at=d.delivered_at,
            )
            for d, attempts in items
        ],
        total=total,
        page=page,
        per_page=per_page,
    )
