"""The sections of :class:`~app.config.Settings`: one model per TOML table."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from app.schedules.clock import Cron, TimeZone


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierLimits(_Section):
    concurrent: PositiveInt
    per_hour: PositiveInt
    # Subagents unfinished at once under one execution started over the API (its whole tree).
    max_descendants: PositiveInt = 10


class Queues(_Section):
    default: str = "agents-default"
    long: str = "agents-long"
    priority: str = "agents-priority"

    def names(self) -> list[str]:
        return [self.default, self.long, self.priority]


QueueName = Literal["default", "long", "priority"]
_REQUESTABLE: dict[str, list[QueueName]] = {
    "free": ["default", "long"],
    "pro": ["default", "long"],
    "enterprise": ["default", "long", "priority"],
}


class Routing(_Section):
    """Which queue a start goes to, first rule that applies: a ``queue`` the request names (if
    the user's tier may use it, per ``requestable``; else 422); a tier in ``priority_tiers`` →
    the priority queue; a type in ``long_agent_types``, or whose own queue is the long one →
    the long queue; ``estimated_steps`` above ``long_steps_threshold`` → the long queue; else
    the type's own queue."""

    priority_tiers: list[str] = Field(default_factory=lambda: ["enterprise"])
    long_agent_types: list[str] = Field(default_factory=lambda: ["research", "code-review"])
    long_steps_threshold: PositiveInt = 50
    requestable: dict[str, list[QueueName]] = Field(
        default_factory=lambda: {tier: list(names) for tier, names in _REQUESTABLE.items()}
    )


class Timeouts(_Section):
    default: PositiveFloat = 600
    long: PositiveFloat = 1800
    max_event_wait: PositiveFloat = 1800


class EventSettings(_Section):
    """Events nobody waits for are stored; a wait that starts at most ``buffer_seconds`` after
    one arrived consumes it (0: a wait only sees events that arrive after it started)."""

    buffer_seconds: float = Field(default=0, ge=0)
    retention_days: PositiveFloat = Field(
        default=7, description="how long events are kept, taken or not"
    )


class OutboundWebhooks(_Section):
    """Deliveries to webhook subscribers: retried with exponential backoff and jitter from
    ``first_retry_seconds`` up to ``max_retry_seconds`` apart, ``max_attempts`` in all (by
    default 12 over about 20 hours)."""

    max_attempts: PositiveInt = 12
    first_retry_seconds: PositiveFloat = 60
    max_retry_seconds: PositiveFloat = 6 * 3600
    timeout_seconds: PositiveFloat = 10
    # Loopback, private, link-local (cloud metadata) and other non-public addresses are
    # refused unless this is set (for development and tests).
    allow_private_networks: bool = False


class StreamLimits(_Section):
    """Live connections (SSE streams and dashboard WebSockets together): at most
    ``max_per_user`` open per user across all API processes, each closed after
    ``max_lifetime_seconds`` (clients resume with ``Last-Event-ID``), the token behind each
    checked again every ``recheck_seconds``, and at most ``subscribes_per_minute`` WebSocket
    subscriptions per connection."""

    max_per_user: PositiveInt = 50
    max_lifetime_seconds: PositiveFloat = 3600
    recheck_seconds: PositiveFloat = 30
    subscribes_per_minute: PositiveInt = 120


class SchedulingSettings(_Section):
    """A start may be scheduled at most ``horizon_days`` ahead."""

    horizon_days: PositiveFloat = 30


class ScheduleConfig(_Section):
    """``[schedules.NAME]``: a cron schedule operators keep in the configuration."""

    user: str = Field(min_length=3, description="the email of the account it runs for")
    cron: Cron
    timezone: TimeZone = "UTC"
    agent_type: str
    input: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("input")
    @classmethod
    def _has_a_prompt(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("prompt"), str) or not value["prompt"]:
            raise ValueError("input needs a prompt")
        return value


JSON_POINTER = r"^(/([^~/]|~[01])*)*$"


class WebhookEndpoint(_Section):
    """``POST /webhooks/NAME``: a signed webhook that delivers an event or starts an agent."""

    secret_env: str = Field(min_length=1, description="the variable holding the secret(s)")
    user: str = Field(min_length=3, description="the email of the account it acts for")
    action: Literal["event", "start"]
    signature: Literal["standard", "github"] = "standard"
    agent_type: str | None = None
    prompt_pointer: str = Field(default="/prompt", pattern=JSON_POINTER)
    max_body_bytes: PositiveInt = 1_000_000

    @model_validator(mode="after")
    def _start_needs_a_type(self) -> WebhookEndpoint:
        if self.action == "start" and not self.agent_type:
            raise ValueError("a webhook with action = 'start' needs an agent_type")
        return self


class Limits(_Section):
    max_steps: PositiveInt = 100
    max_tokens: PositiveInt = 100_000
    chunk_size: PositiveInt = 10
    max_chunks: PositiveInt = 50
    # Subagents one execution may start in all (each spawn_subagents call: 10 at most).
    max_children: PositiveInt = 50


class Retention(_Section):
    """How long what finished executions leave behind is kept (``agents prune``, daily)."""

    executions_days: PositiveFloat = 30
    logs_days: PositiveFloat = 7


class MetricsSettings(_Section):
    """``GET /metrics`` on the API (Prometheus text format), and where workers serve theirs."""

    enabled: bool = True
    require_admin: bool = Field(
        default=True,
        description="the API's /metrics needs an admin's bearer token; turn off only where the "
        "API's address is private",
    )
    worker_listen: str | None = Field(
        default=None,
        pattern=r"^[^\s:]*:[0-9]{1,5}$",
        description="host:port where `agents worker` serves its processes' metrics, without "
        "auth (bind it to a private address); unset: not served",
    )


class WorkspaceSettings(_Section):
    cleanup_after_days: PositiveFloat = Field(
        default=7, description="days after its execution ended that a workspace is deleted"
    )


def _scaled_processes(shipped: int) -> int:
    """A shipped process count scaled to this machine: the full count from 10 CPUs up, else
    in proportion, at least one (each process keeps many executions in flight at once)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(shipped, shipped * (cpus or 1) // 10))


class WorkerPool(_Section):
    """Processes that ``agents worker`` keeps running for some queues.

    ``queues`` defaults to the pool's name; ``processes = 0`` turns a pool off; ``max_jobs``
    defaults to ``worker.max_jobs``; ``timeout`` (seconds) bounds one job, i.e. one chunk of
    an execution (default: the longest agent timeout + 60); a process whose resident memory
    passes ``max_memory_mb`` hands its executions over and is replaced."""

    queues: list[str] | None = None
    processes: NonNegativeInt = 1
    max_jobs: PositiveInt | None = None
    timeout: PositiveFloat | None = None
    max_memory_mb: PositiveInt | None = None


def _default_pools() -> dict[str, dict[str, Any]]:
    """The three supervised queues of the original design: 10 / 5 / 5 processes (scaled to the
    machine), 600 / 1,800 / 600 s job timeouts and 512 / 1,024 / 512 MB memory caps."""
    shipped = {"agents-default": (10, 600, 512), "agents-long": (5, 1800, 1024)}
    shipped["agents-priority"] = (5, 600, 512)
    return {
        name: {"processes": _scaled_processes(processes), "timeout": timeout, "max_memory_mb": mb}
        for name, (processes, timeout, mb) in shipped.items()
    }


class WorkerTuning(_Section):
    """How workers poll, heartbeat and recover; defaults favour low start latency.

    ``max_jobs`` executions per queue may be in flight in one process (they wait on the model
    concurrently); the process holds at most ``db_pool_size`` PostgreSQL connections, each only
    while it writes, and steps wait up to ``db_pool_timeout`` seconds for one;
    ``http_max_connections`` bounds its connections to model providers, and
    ``http_max_connections_per_host`` (0: no bound of its own) those to any one provider."""

    poll_delay: PositiveFloat = 0.01
    max_jobs: PositiveInt = 100
    db_pool_size: PositiveInt = 20
    db_pool_timeout: PositiveFloat = 30
    http_max_connections: PositiveInt = 1000
    http_max_connections_per_host: int = Field(default=0, ge=0)
    heartbeat_interval: PositiveFloat = 10
    stale_after: PositiveFloat = 60
    max_recoveries: int = Field(default=3, ge=0)
    sweep_interval: PositiveInt = 30
    db_connections: PositiveInt = Field(
        default=50,
        description="PostgreSQL connections of all the processes one `agents worker` "
        "supervises, shared out: each gets this divided by their number (at least 5, at most "
        "db_pool_size)",
    )
    drain_grace: PositiveFloat = Field(
        default=30,
        description="seconds a stopping worker waits for its running chunks to reach a step "
        "boundary before it hands the rest over from their last committed step",
    )
    pools: dict[str, WorkerPool] = Field(default_factory=dict, validate_default=True)

    @field_validator("pools", mode="before")
    @classmethod
    def _add_to_default_pools(cls, value: Any) -> Any:
        """Configuring one pool, or one field of it, keeps the other shipped pools."""
        if not isinstance(value, dict):
            return value
        merged = _default_pools()
        for name, override in value.items():
            if isinstance(override, BaseModel):
                override = override.model_dump(exclude_unset=True)
            if isinstance(override, dict):
                merged[name] = {**merged.get(name, {}), **override}
            else:
                merged[name] = override
        return merged
