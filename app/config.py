"""Settings: environment variables (``AGENTS_*``, ``DATABASE_URL``, ``REDIS_URL``) over an optional
TOML file (``AGENTS_CONFIG_FILE``) over the defaults below."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.agents.demo import DEMO_AGENT
from app.agents.spec import AgentTypeSpec

Tier = Literal["free", "pro", "enterprise"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TierLimits(_Section):
    concurrent: PositiveInt
    per_hour: PositiveInt


class Queues(_Section):
    default: str = "agents-default"
    long: str = "agents-long"
    priority: str = "agents-priority"

    def names(self) -> list[str]:
        return [self.default, self.long, self.priority]


class Timeouts(_Section):
    default: PositiveFloat = 600
    long: PositiveFloat = 1800
    max_event_wait: PositiveFloat = 1800


class Limits(_Section):
    max_steps: PositiveInt = 100
    max_tokens: PositiveInt = 100_000
    chunk_size: PositiveInt = 10
    max_chunks: PositiveInt = 50


class WorkerTuning(_Section):
    """How workers poll, heartbeat and recover; defaults favour low start latency."""

    poll_delay: PositiveFloat = 0.01
    max_jobs: PositiveInt = 10
    heartbeat_interval: PositiveFloat = 10
    stale_after: PositiveFloat = 60
    max_recoveries: int = Field(default=3, ge=0)
    sweep_interval: PositiveInt = 30


def _default_tiers() -> dict[Tier, TierLimits]:
    return {
        "free": TierLimits(concurrent=1, per_hour=10),
        "pro": TierLimits(concurrent=5, per_hour=100),
        "enterprise": TierLimits(concurrent=20, per_hour=1000),
    }


def _builtin_agent_types() -> dict[str, AgentTypeSpec]:
    return {
        "code-assistant": AgentTypeSpec(
            description="Reads and edits code in its workspace.",
            system_prompt="You are a careful senior software engineer working in a repository.",
            capabilities=["files"],
            queue="agents-default",
            max_steps=50,
        ),
        "research": AgentTypeSpec(
            description="Investigates a question in depth, fanning out to subagents.",
            system_prompt=(
                "You are a meticulous researcher. Split broad questions into parts, hand them "
                "to subagents, then synthesise what they found. Cite what you find."
            ),
            capabilities=["files", "tasks", "subagents"],
            subagents=["deep-research", "quick-lookup", "synthesis"],
            queue="agents-long",
            max_steps=100,
            max_depth=3,
        ),
        "code-review": AgentTypeSpec(
            description="Reviews code and reports problems.",
            system_prompt="You are a thorough code reviewer. Report concrete problems.",
            capabilities=["files"],
            queue="agents-default",
            timeout=300,
            max_steps=30,
        ),
        "demo": DEMO_AGENT,
    }


def _builtin_subagents() -> dict[str, AgentTypeSpec]:
    return {
        "deep-research": AgentTypeSpec(
            description="Investigates one sub-question thoroughly and reports findings.",
            system_prompt="You research one question thoroughly and report what you found.",
            capabilities=["files", "tasks"],
            queue="agents-long",
            max_steps=50,
        ),
        "quick-lookup": AgentTypeSpec(
            description="Answers a narrow factual question quickly.",
            system_prompt="You answer one narrow question quickly and precisely.",
            capabilities=["files"],
            queue="agents-default",
            max_steps=10,
        ),
        "synthesis": AgentTypeSpec(
            description="Combines findings into one coherent answer.",
            system_prompt="You combine the findings you are given into one coherent answer.",
            capabilities=["files"],
            queue="agents-default",
            max_steps=10,
        ),
    }


def _merge_specs(builtins: dict[str, AgentTypeSpec], value: Any) -> Any:
    """Configured specs add to the built-in ones; a table naming a built-in overrides fields."""
    if not isinstance(value, dict):
        return value
    merged: dict[str, Any] = {
        name: spec.model_dump(exclude_unset=True) for name, spec in builtins.items()
    }
    for name, override in value.items():
        if isinstance(override, AgentTypeSpec):
            override = override.model_dump(exclude_unset=True)
        if name in merged and isinstance(override, dict):
            merged[name] = {**merged[name], **override}
        else:
            merged[name] = override
    return merged


SUBAGENT_PREFIX = "subagent:"


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
    config_file: Path | None = None
    data_dir: Path = Path(".data")
    workspace_base: Path = Path(".data/workspaces")
    db_pool_size: PositiveInt = 20
    tiers: dict[Tier, TierLimits] = Field(default_factory=_default_tiers)
    queues: Queues = Field(default_factory=Queues)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    limits: Limits = Field(default_factory=Limits)
    worker: WorkerTuning = Field(default_factory=WorkerTuning)
    agent_types: dict[str, AgentTypeSpec] = Field(default_factory=dict)
    subagents: dict[str, AgentTypeSpec] = Field(default_factory=dict)

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_default_tiers(cls, value: Any) -> Any:
        """Configuring one tier, or one limit of a tier, keeps the defaults of the rest."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {name: t.model_dump() for name, t in _default_tiers().items()}
        for name, override in value.items():
            if isinstance(override, TierLimits):
                override = override.model_dump()
            if name in merged and isinstance(override, dict):
                merged[name] = {**merged[name], **override}
            else:
                merged[name] = override
        return merged

    @field_validator("agent_types", mode="before")
    @classmethod
    def _merge_builtin_agent_types(cls, value: Any) -> Any:
        return _merge_specs(_builtin_agent_types(), value)

    @field_validator("subagents", mode="before")
    @classmethod
    def _merge_builtin_subagents(cls, value: Any) -> Any:
        return _merge_specs(_builtin_subagents(), value)

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

    def _apply_limits(self, specs: dict[str, AgentTypeSpec]) -> None:
        for name, spec in specs.items():
            update: dict[str, Any] = {
                "max_steps": min(spec.max_steps, self.limits.max_steps),
                "max_tokens": min(spec.max_tokens, self.limits.max_tokens),
            }
            if "timeout" not in spec.model_fields_set:
                is_long = spec.queue == self.queues.long
                update["timeout"] = self.timeouts.long if is_long else self.timeouts.default
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
