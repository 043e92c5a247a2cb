"""The statements behind webhook subscriptions and their deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.outbound.models import Attempt, Delivery, Subscription


async def add(session: AsyncSession, row: Subscription | Delivery | Attempt) -> None:
    session.add(row)
    await session.flush()


async def get_subscription(
    session: AsyncSession, subscription_id: int, *, user_id: int | None
) -> Subscription | None:
    query = select(Subscription).where(Subscription.id == subscription_id)
    if user_id is not None:
        query = query.where(Subscription.user_id == user_id)
    found: Subscription | None = await session.scalar(query)
    return found


async def list_subscriptions(session: AsyncSession, user_id: int) -> list[Subscription]:
    rows = await session.scalars(
        select(Subscription).where(Subscription.user_id == user_id).order_by(Subscription.id)
    )
    return list(rows)


async def delete_subscription(session: AsyncSession, subscription: Subscription) -> None:
    await session.delete(subscription)


async def subscribers(
    session: AsyncSession, user_id: int, execution_id: uuid.UUID, event: str
) -> list[Subscription]:
    """The subscriptions to tell that ``execution_id`` of ``user_id`` reached ``event``."""
    rows = await session.scalars(
        select(Subscription).where(
            Subscription.user_id == user_id,
            or_(Subscription.execution_id.is_(None), Subscription.execution_id == execution_id),
            Subscription.events.contains([event]),
        )
    )
    return list(rows)


async def page_deliveries(
    session: AsyncSession, subscription_id: int, *, page: int, per_page: int
) -> tuple[list[tuple[Delivery, list[Attempt]]], int]:
    """A subscription's deliveries, newest first, each with its attempts in order."""
    where = Delivery.subscription_id == subscription_id
    total = await session.scalar(select(func.count()).select_from(Delivery).where(where))
    deliveries = list(
        await session.scalars(
            select(Delivery)
            .where(where)
            .order_by(Delivery.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )
    attempts = await session.scalars(
        select(Attempt)
        .where(Attempt.delivery_id.in_([d.id for d in deliveries]))
        .order_by(Attempt.delivery_id, Attempt.number)
    )
    by_delivery: dict[int, list[Attempt]] = {d.id: [] for d in deliveries}
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    return [(d, by_delivery[d.id]) for d in deliveries], int(total or 0)


async def lock_due(session: AsyncSession, delivery_id: int) -> Delivery | None:
    """A pending delivery whose attempt is due (a second of clock slack), locked; None if it is
    not pending, not due (another attempt has it in flight), or locked by another worker."""
    found: Delivery | None = await session.scalar(
        select(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            or_(
                Delivery.next_attempt_at.is_(None),
                Delivery.next_attempt_at <= func.now() + timedelta(seconds=1),
            ),
        )
        .with_for_update(skip_locked=True)
    )
    return found


async def lock_in_flight(session: AsyncSession, delivery_id: int, attempts: int) -> Delivery | None:
    """The delivery an attempt claimed, locked to record it: still pending with ``attempts``
    attempts recorded (None: another attempt was recorded meanwhile)."""
    found: Delivery | None = await session.scalar(
        select(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.attempts == attempts,
        )
        .with_for_update()
    )
    return found


async def overdue(session: AsyncSession, before: datetime, limit: int) -> list[int]:
    """Pending deliveries whose next attempt should have happened (its job was lost)."""
    rows = await session.scalars(
        select(Delivery.id)
        .where(Delivery.status == "pending", Delivery.next_attempt_at < before)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
    )
    return list(rows)


async def postpone(session: AsyncSession, delivery_ids: list[int], until: datetime) -> None:
    await session.execute(
        update(Delivery).where(Delivery.id.in_(delivery_ids)).values(next_attempt_at=until)
    )
