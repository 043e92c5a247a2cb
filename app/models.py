"""Every table, imported in one place for Alembic and the schema test."""

from app.auth.models import ApiToken, User
from app.db import Base
from app.events.models import Event, WebhookMessage
from app.executions.models import Execution, ExecutionLog, ExecutionMessage, ExecutionSignal
from app.outbound.models import Attempt, Delivery, Subscription
from app.schedules.models import Schedule, ScheduleFire

__all__ = [
    "ApiToken",
    "Attempt",
    "Base",
    "Delivery",
    "Event",
    "Execution",
    "ExecutionLog",
    "ExecutionMessage",
    "ExecutionSignal",
    "Schedule",
    "ScheduleFire",
    "Subscription",
    "User",
    "WebhookMessage",
]
