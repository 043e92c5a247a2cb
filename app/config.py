"""Settings: environment variables (``AGENTS_*``, ``DATABASE_URL``, ``REDIS_URL``) over an optional
TOML file (``AGENTS_CONFIG_FILE``) over the defaults below and the built-in agent types of
:mod:`app.agents.catalogue`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    PositiveInt,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.agents.catalogue import builtin_agent_types, builtin_subagents
from app.agents.sandbox import SandboxSettings
from app.agents.spec import AgentTypeSpec
from app.config_sections import (  # re-exported: the sections belong to the settings
    EventSettings,
    Limits,
    MetricsSettings,
    OutboundWebhooks,
    Queues,
    Retention,
    Routing,
    ScheduleConfig,
    SchedulingSettings,
    StreamLimits,
    TierLimits,
    Timeouts,
    WebhookEndpoint,
    WorkerTuning,
    WorkspaceSettings,
)
from app.webhooks.signatures import parse_standard_secret

Tier = Literal["free", "pro", "enterprise"]

__all__ = [
    "SUBAGENT_PREFIX",
    "EventSettings",
    "Limits",
    "MetricsSettings",
    "OutboundWebhooks",
    "Queues",
    "ScheduleConfig",
    "SchedulingSettings",
    "ServicesNotConfigured",
    "Settings",
    "StreamLimits",
    "Tier",
    "TierLimits",
    "Timeouts",
    "WebhookEndpoint",
    "WorkerTuning",
    "describe_settings_error",
]


def _default_tiers() -> dict[str, TierLimits]:
    return {
        "free": TierLimits(concurrent=1, per_hour=10),
        "pro": TierLimits(concurrent=5, per_hour=100),
        "enterprise": TierLimits(concurrent=20, per_hour=1000),
    }


_DEFAULT_TABLES: dict[str, Callable[[], Mapping[str, BaseModel]]] = {
    "tiers": _default_tiers,
    "agent_types": builtin_agent_types,
    "subagents": builtin_subagents,
}


def _merge_tables(defaults: Mapping[str, BaseModel], value: Any) -> Any:
    """Configured tables add to the defaults; a table naming a default overrides the given
    fields (only those set, so a spec's unset fields keep their defaults)."""
    if not isinstance(value, dict):
        return value
    merged: dict[str, Any] = {
        name: model.model_dump(exclude_unset=True) for name, model in defaults.items()
    }
    for name, override in value.items():
        if isinstance(override, BaseModel):
            override = override.model_dump(exclude_unset=True)
        if name in merged and isinstance(override, dict):
            merged[name] = {**merged[name], **override}
        else:
            merged[name] = override
    return merged


def _webhook_secrets(endpoint: WebhookEndpoint) -> tuple[str, ...]:
    """The endpoint's secrets from its variable (comma-separated), checked for its scheme."""
    raw = os.environ.get(endpoint.secret_env, "")
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not secrets:
        raise ValueError("not set")
    if endpoint.signature == "standard":
        for secret in secrets:
            parse_standard_secret(secret)
    return secrets


SUBAGENT_PREFIX = "subagent:"


class ServicesNotConfigured(RuntimeError):
    """``DATABASE_URL`` / ``REDIS_URL`` are not set where embedded servers may not be started
    (everywhere but ``agents dev``, the admin commands and the tests)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AGENTS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "AGENTS_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "AGENTS_REDIS_URL")
    )
    data_dir: Path = Path(".data")
    workspace_base: Path = Path(".data/workspaces")
    db_pool_size: PositiveInt = 20
    max_body_bytes: PositiveInt = 2_000_000
    tiers: dict[Tier, TierLimits] = Field(default_factory=dict)
    queues: Queues = Field(default_factory=Queues)
    routing: Routing = Field(default_factory=Routing)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: Limits = Field(default_factory=Limits)
    worker: WorkerTuning = Field(default_factory=WorkerTuning)
    agent_types: dict[str, AgentTypeSpec] = Field(default_factory=dict)
    subagents: dict[str, AgentTypeSpec] = Field(default_factory=dict)
    events: EventSettings = Field(default_factory=EventSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    outbound_webhooks: OutboundWebhooks = Field(default_factory=OutboundWebhooks)
    streams: StreamLimits = Field(default_factory=StreamLimits)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    retention: Retention = Field(default_factory=Retention)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    workspace: WorkspaceSettings = Field(default_factory=WorkspaceSettings)
    webhooks: dict[str, WebhookEndpoint] = Field(default_factory=dict)
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    # Private, so secrets stay out of repr() and model_dump().
    _provider_keys: dict[str, str] = PrivateAttr(default_factory=dict)
    _webhook_secrets: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("tiers", "agent_types", "subagents", mode="before")
    @classmethod
    def _add_to_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """Configuring one tier or agent type, or one field of it, keeps the rest."""
        return _merge_tables(_DEFAULT_TABLES[str(info.field_name)](), value)

    @field_validator("agent_types")
    @classmethod
    def _check_queues(cls, value: dict[str, AgentTypeSpec]) -> dict[str, AgentTypeSpec]:
        for name, spec in value.items():
            if not spec.queue:
                raise ValueError(f"agent type {name!r} has an empty queue")
        return value

    @model_validator(mode="after")
    def _check_worker_timing(self) -> Settings:
        if self.worker.heartbeat_interval >= self.worker.stale_after:
            raise ValueError(
                "worker.heartbeat_interval must be shorter than worker.stale_after, or the sweep "
                "takes healthy executions away from their workers"
            )
        return self

    @model_validator(mode="after")
    def _apply_limits_to_agent_types(self) -> Settings:
        """``limits.max_steps`` / ``limits.max_tokens`` are ceilings for every agent type; a type
        without its own ``timeout`` gets ``timeouts.long`` on the long queue, else
        ``timeouts.default``."""
        for specs in (self.agent_types, self.subagents):
            self._apply_limits(specs)
        return self

    @model_validator(mode="after")
    def _check_webhooks_and_schedules(self) -> Settings:
        """Every webhook endpoint and schedule names a known agent type, and every endpoint has
        its secrets (read once, kept private; a comma-separated value holds several, so a
        secret can rotate)."""
        for name, endpoint in self.webhooks.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,99}", name):
                raise ValueError(f"webhook name {name!r}: use a-z, 0-9, '-' and '_'")
            if endpoint.agent_type and endpoint.agent_type not in self.agent_types:
                raise ValueError(f"webhook {name!r}: no agent type {endpoint.agent_type!r}")
        for name, schedule in self.schedules.items():
            if schedule.agent_type not in self.agent_types:
                raise ValueError(f"schedule {name!r}: no agent type {schedule.agent_type!r}")
        for name, endpoint in self.webhooks.items():
            try:
                self._webhook_secrets[name] = _webhook_secrets(endpoint)
            except ValueError as exc:
                raise ValueError(f"webhook {name!r}: {endpoint.secret_env}: {exc}") from None
        return self

    @model_validator(mode="after")
    def _read_provider_keys(self) -> Settings:
        names = {spec.api_key_env for spec in self._all_specs() if spec.api_key_env}
        self._provider_keys = {name: os.environ[name] for name in names if os.environ.get(name)}
        return self

    def _apply_limits(self, specs: dict[str, AgentTypeSpec]) -> None:
        for name, spec in specs.items():
            update: dict[str, Any] = {
                "max_steps": min(spec.max_steps, self.limits.max_steps),
                "max_tokens": min(spec.max_tokens, self.limits.max_tokens),
            }
            if "timeout" not in spec.model_fields_set:
                is_long = spec.queue == self.queues.long
                update["timeout"] = self.timeouts.long if is_long else self.timeouts.default
            if "max_event_wait" not in spec.model_fields_set:
                update["max_event_wait"] = self.timeouts.max_event_wait
            specs[name] = spec.model_copy(update=update)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("AGENTS_CONFIG_FILE")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"AGENTS_CONFIG_FILE: no such file: {config_file}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def provider_keys(self) -> Mapping[str, str]:
        """The API keys of the providers, by the variable an ``api_key_env`` names (agent types and
        subagents): read from the environment once, when the settings were built; unset or empty
        variables are left out."""
        return MappingProxyType(self._provider_keys)

    def webhook_secrets(self, name: str) -> tuple[str, ...]:
        """The secrets a webhook endpoint's signatures may be made with."""
        return self._webhook_secrets.get(name, ())

    def service_urls(self) -> tuple[str, str]:
        """The database and Redis URLs; :class:`ServicesNotConfigured` names any not set."""
        if self.database_url and self.redis_url:
            return self.database_url, self.redis_url
        servers = {
            "DATABASE_URL": ("PostgreSQL", self.database_url),
            "REDIS_URL": ("Redis", self.redis_url),
        }
        missing = {name: server for name, (server, url) in servers.items() if not url}
        names, what = " and ".join(missing), " and ".join(missing.values())
        if len(missing) == 1:
            message = f"{names} is not set: set it to your {what} server"
        else:
            message = f"{names} are not set: set them to your {what} servers"
        raise ServicesNotConfigured(
            f"{message}, or run 'agents dev' for a local setup with embedded servers"
        )

    def spec_for(self, agent_type: str) -> AgentTypeSpec | None:
        """The spec of an execution's type: an agent type, or ``subagent:NAME`` for a child."""
        if agent_type.startswith(SUBAGENT_PREFIX):
            return self.subagents.get(agent_type.removeprefix(SUBAGENT_PREFIX))
        return self.agent_types.get(agent_type)

    def tier_limits(self, tier: str) -> TierLimits:
        """A tier's limits; an unknown tier gets the free tier's."""
        for name, limits in self.tiers.items():
            if name == tier:
                return limits
        return self.tiers["free"]

    def queue_names(self) -> list[str]:
        """Every queue a worker may have to serve: the standard ones and any an agent type names."""
        names = self.queues.names()
        for spec in self._all_specs():
            if spec.queue not in names:
                names.append(spec.queue)
        return names

    def job_timeout(self) -> float:
        """A job runs one chunk, bounded well below this, so it only stops runaway jobs."""
        longest = max([self.timeouts.long, *(s.timeout for s in self._all_specs())])
        return longest + 60

    def _all_specs(self) -> list[AgentTypeSpec]:
        return [*self.agent_types.values(), *self.subagents.values()]


def describe_settings_error(error: Exception) -> str:
    """One line per invalid key, naming it, for a clear failure at start."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        lines.append(
            f"invalid setting {key}: {item['msg']}" if key else f"invalid settings: {item['msg']}"
        )
    return "\n".join(lines)
