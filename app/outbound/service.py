"""Webhook subscriptions, and the signed deliveries they get when an execution changes status.

A delivery is created after the status change has committed (never before), with its body
fixed then: every attempt sends the same bytes under the same ``webhook-id``, signed afresh per
Standard Webhooks with the subscription's secret. Attempts run in worker jobs; a timeout, a
connection error, a 429 or a 5xx is retried with exponential backoff and jitter (a longer
``Retry-After`` is honoured), up to ``outbound_webhooks.max_attempts``. Every attempt is kept.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import metrics
from app.auth.models import User
from app.config import OutboundWebhooks, Settings
from app.db import after_commit, engine_transaction
from app.errors import InvalidRequest, NotFound
from app.executions.jobs import enqueue_webhook_attempt
from app.executions.models import Execution
from app.executions.schemas import ExecutionOut
from app.executions.transitions import Status, StatusChange
from app.outbound import repository
from app.outbound.guard import RefusedURL, check_destination
from app.outbound.models import Attempt, Delivery, Subscription
from app.webhooks.signatures import sign_standard

log = logging.getLogger(__name__)

# The statuses a subscription may ask to hear about.
SUBSCRIBABLE = frozenset(
    {
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
        Status.AWAITING_INPUT,
        Status.AWAITING_EVENT,
        Status.PAUSED,
    }
)
EXCERPT_BYTES = 1024


class SubscriptionNotFound(NotFound):
    type = "webhook-not-found"
    title = "Webhook subscription not found"


@dataclass(frozen=True, slots=True)
class Created:
    subscription: Subscription
    secret: str  # shown once


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def create_subscription(
    session: AsyncSession,
    settings: Settings,
    user: User,
    *,
    url: str,
    events: list[str],
    description: str = "",
    execution_id: uuid.UUID | None = None,
) -> Created:
    try:
        await check_destination(
            url, allow_private_networks=settings.outbound_webhooks.allow_private_networks
        )
    except RefusedURL as exc:
        raise InvalidRequest(f"Webhooks cannot be sent to {url!r}: {exc}.") from None
    secret = new_secret()
    subscription = Subscription(
        user_id=user.id,
        execution_id=execution_id,
        url=url,
        events=sorted(set(events)),
        secret=secret,
        description=description,
    )
    await repository.add(session, subscription)
    return Created(subscription, secret)


async def get_visible_subscription(
    session: AsyncSession, user: User, subscription_id: int
) -> Subscription:
    found = await repository.get_subscription(
        session, subscription_id, user_id=None if user.is_admin else user.id
    )
    if found is None:
        raise SubscriptionNotFound(f"No webhook subscription {subscription_id}.")
    return found


async def notify(db: AsyncEngine, redis: ArqRedis, queue: str, change: StatusChange) -> int:
    """Create the deliveries a committed status change calls for, and queue their first
    attempts; how many."""
    if change.status not in SUBSCRIBABLE:
        return 0
    async with engine_transaction(db) as session:
        subscriptions = await repository.subscribers(
            session, change.user_id, change.execution_id, change.status.value
        )
        if not subscriptions:
            return 0
        execution = await session.get(Execution, change.execution_id)
        if execution is None:
            return 0
        now = datetime.now(UTC)
        body = json.dumps(
            {
                "type": f"execution.{change.status.value}",
                "timestamp": now.isoformat(),
                "data": ExecutionOut.model_validate(execution).model_dump(mode="json"),
            },
            separators=(",", ":"),
        )
        deliveries = []
        for subscription in subscriptions:
            delivery = Delivery(
                subscription_id=subscription.id,
                execution_id=change.execution_id,
                message_id=f"msg_{uuid.uuid4().hex}",
                event_type=change.status.value,
                body=body,
                next_attempt_at=now,
            )
            await repository.add(session, delivery)
            deliveries.append((delivery.id, subscription.id))

        async def first_attempts() -> None:
            for delivery_id, _ in deliveries:
                await enqueue_webhook_attempt(redis, queue, delivery_id, 1, now)

        after_commit(session, first_attempts)
    return len(deliveries)


@dataclass(frozen=True, slots=True)
class _Result:
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    retry_after: float | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.refused:
            return False
        if self.status_code is None:
            return True  # a timeout or a connection error
        return self.status_code == 429 or self.status_code >= 500


# Beyond the request's own timeout, how long a claimed attempt stays in flight.
_IN_FLIGHT_MARGIN = 30


async def _count_attempt(outcome: str) -> None:
    metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()


async def attempt_delivery(
    db: AsyncEngine, redis: ArqRedis, http: httpx.AsyncClient, settings: Settings, delivery_id: int
) -> str:
    """One attempt of a pending delivery that is due.

    Three steps, no database connection held while the receiver answers: claim the attempt
    (its ``next_attempt_at`` moves past the request's timeout, so a duplicate job, or the
    sweep, leaves it alone while it is in flight; if the worker dies, the sweep queues it again
    after that), POST, then record the attempt if no other was recorded meanwhile."""
    tuning = settings.outbound_webhooks
    async with engine_transaction(db) as session:
        claimed = await repository.lock_due(session, delivery_id)
        if claimed is None:
            return "not pending"
        subscription = await session.get(Subscription, claimed.subscription_id)
        assert subscription is not None  # deliveries go with their subscription
        attempts = claimed.attempts
        claimed.next_attempt_at = datetime.now(UTC) + timedelta(
            seconds=tuning.timeout_seconds + _IN_FLIGHT_MARGIN
        )
    started = time.monotonic()
    try:
        result = await _post(http, tuning, subscription, claimed)
    except Exception as exc:  # recorded as an attempt, so it counts towards max_attempts
        log.exception("webhook delivery %s failed unexpectedly", delivery_id)
        result = _Result(error=f"internal error: {type(exc).__name__}")
    duration_ms = int((time.monotonic() - started) * 1000)
    async with engine_transaction(db) as session:
        delivery = await repository.lock_in_flight(session, delivery_id, attempts)
        if delivery is None:
            log.warning("webhook delivery %s: another attempt was recorded first", delivery_id)
            return "superseded"
        number = attempts + 1
        now = datetime.now(UTC)
        next_at = None
        if result.delivered:
            delivery.status, delivery.delivered_at = "delivered", now
        elif result.retryable and number < tuning.max_attempts:
            next_at = now + timedelta(seconds=_backoff(tuning, number, result.retry_after))
        else:
            delivery.status = "failed"
        delivery.attempts, delivery.next_attempt_at = number, next_at
        outcome = "retrying" if next_at is not None else delivery.status
        after_commit(session, lambda: _count_attempt(outcome))
        await repository.add(
            session,
            Attempt(
                delivery_id=delivery.id,
                number=number,
                status_code=result.status_code,
                duration_ms=duration_ms,
                error=result.error,
                response_excerpt=result.excerpt,
                next_attempt_at=next_at,
            ),
        )
        if next_at is not None:
            at = next_at

            async def again() -> None:
                await enqueue_webhook_attempt(
                    redis, settings.queues.default, delivery_id, number + 1, at
                )

            after_commit(session, again)
        return delivery.status


async def _post(
    http: httpx.AsyncClient,
    tuning: OutboundWebhooks,
    subscription: Subscription,
    delivery: Delivery,
) -> _Result:
    try:
        await check_destination(
            subscription.url, allow_private_networks=tuning.allow_private_networks
        )
    except RefusedURL as exc:
        return _Result(error=f"refused: {exc}", refused=True)
    timestamp = int(time.time())
    body = delivery.body.encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "agent-runner-webhooks",
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(
            subscription.secret, delivery.message_id, timestamp, body
        ),
    }
    try:
        # httpx's timeout bounds each read: a reply trickling in would hold the attempt (and its
        # row lock) for as long as it liked. The whole attempt gets timeout_seconds.
        async with (
            asyncio.timeout(tuning.timeout_seconds),
            http.stream(
                "POST",
                subscription.url,
                content=body,
                headers=headers,
                timeout=tuning.timeout_seconds,
                follow_redirects=False,
            ) as response,
        ):
            excerpt = b""
            async for chunk in response.aiter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break  # only the start of a reply is kept
            return _Result(
                status_code=response.status_code,
                # PostgreSQL text cannot hold NUL: a binary reply would make the attempt
                # unrecordable.
                excerpt=excerpt[:EXCERPT_BYTES].decode(errors="replace").replace("\x00", ""),
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
    except (httpx.TimeoutException, TimeoutError):
        return _Result(error=f"timed out after {tuning.timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return _Result(error=f"{type(exc).__name__}: {exc}"[:500])


def _backoff(tuning: OutboundWebhooks, attempt: int, retry_after: float | None) -> float:
    """Seconds before the attempt after ``attempt``: doubling from the first retry, with ±20%
    jitter, at least what the receiver asked for, at most ``max_retry_seconds``."""
    delay = tuning.first_retry_seconds * 2.0 ** (attempt - 1) * random.uniform(0.8, 1.2)
    return min(max(delay, retry_after or 0.0), tuning.max_retry_seconds)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # asctime() and "-0000" dates: HTTP dates are in GMT
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def queue_overdue(db: AsyncEngine, redis: ArqRedis, queue: str) -> int:
    """For the sweep: queue again the pending deliveries whose attempt job was lost."""
    now = datetime.now(UTC)
    async with engine_transaction(db) as session:
        overdue = await repository.overdue(session, now - timedelta(minutes=1), 500)
        if overdue:
            await repository.postpone(session, overdue, now)
    for delivery_id in overdue:
        await enqueue_webhook_attempt(
            redis, queue, delivery_id, 0, now, suffix=f":{int(now.timestamp())}"
        )
    return len(overdue)
