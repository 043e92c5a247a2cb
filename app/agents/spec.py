"""Agent type specifications: what an agent type is, as data (settings or a TOML file)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

Provider = Literal["openai", "anthropic", "scripted"]
Capability = Literal["bash", "files", "tasks", "ask_user", "subagents", "events"]

CAPABILITY_TOOLS: dict[str, tuple[str, ...]] = {
    "files": ("read_file", "write_file", "edit_file", "list_files", "search_files"),
    "bash": ("bash",),
    "tasks": ("task_plan",),
    "ask_user": ("ask_user",),
    "subagents": ("spawn_subagents",),
    "events": ("wait_for_event",),
}
"""The tools each capability gives the model."""

INHERITED_FIELDS = (
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "request_timeout",
    "max_retries",
)
"""What a subagent takes from the execution that spawns it, unless its own spec sets it."""


class ScriptedToolCall(BaseModel):
    """A tool call the scripted driver makes on behalf of the model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptedTurn(BaseModel):
    """One assistant turn of a deterministic script.

    ``content`` may contain ``{prompt}`` (the first user message), ``{last_tool_result}`` (the
    content of the latest tool message) and ``{last_user_message}`` (the latest user message,
    e.g. an answer to ``ask_user``); they are substituted when the turn is played.
    """

    model_config = ConfigDict(extra="forbid")

    content: str | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    input_tokens: int = Field(default=10, ge=0)
    output_tokens: int = Field(default=5, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0)


class AgentTypeSpec(BaseModel):
    """Everything needed to build and run one agent type."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    provider: Provider = "openai"
    model: str = "gpt-4o-mini"
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    system_prompt: str = "You are a helpful assistant."
    capabilities: list[Capability] = Field(default_factory=list)
    queue: str = "agents-default"
    max_steps: PositiveInt = 100
    max_tokens: PositiveInt = 100_000
    timeout: PositiveFloat = 600.0
    request_timeout: PositiveFloat = 120.0
    max_retries: int = Field(default=4, ge=0)
    script: list[ScriptedTurn] = Field(default_factory=list)
    bash_timeout: PositiveFloat = 60.0
    subagents: list[str] = Field(default_factory=list)
    max_depth: int = Field(default=3, ge=0)
    summary_max_chars: PositiveInt = 12_000
    # Tool calls one step runs; the model's further calls in that step get an error instead.
    max_tool_calls: PositiveInt = 32
    # Only these of the tools the capabilities give (None: all of them).
    tools: list[str] | None = None
    # A subagent's working directory: a workspace of its own, or its parent's (shared).
    workspace: Literal["own", "parent"] = "own"
    # The longest an execution of this type waits for an event (``wait_for_event``'s default
    # and ceiling); unset, ``timeouts.max_event_wait``.
    max_event_wait: PositiveFloat = 1800.0

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        """An ``anthropic`` type talks to Anthropic's API with ``ANTHROPIC_API_KEY`` unless it
        says otherwise (the field defaults are OpenAI's)."""
        if isinstance(data, dict) and data.get("provider") == "anthropic":
            data = {
                "base_url": "https://api.anthropic.com",
                "api_key_env": "ANTHROPIC_API_KEY",
                "model": "claude-sonnet-4-5",
                **data,
            }
        return data

    @model_validator(mode="after")
    def _tools_come_from_capabilities(self) -> AgentTypeSpec:
        if self.tools is not None:
            offered = {tool for c in self.capabilities for tool in CAPABILITY_TOOLS[c]}
            unknown = sorted(set(self.tools) - offered)
            if unknown:
                raise ValueError(
                    f"tools {', '.join(unknown)} are not given by the capabilities "
                    f"{', '.join(self.capabilities) or '(none)'}"
                )
        return self

    def inheritance(self) -> dict[str, Any]:
        """What a subagent spawned by an agent of this spec inherits (see ``inherit``)."""
        return {name: getattr(self, name) for name in INHERITED_FIELDS}

    def inherit(self, parent: dict[str, Any]) -> AgentTypeSpec:
        """This spec with the model settings of the spawning execution (``parent``, from its
        ``inheritance``) where this spec does not set its own."""
        update = {
            name: value
            for name, value in parent.items()
            if name in INHERITED_FIELDS and name not in self.model_fields_set
        }
        return self.model_copy(update=update) if update else self

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _empty_means_no_key(cls, value: object) -> object:
        """TOML has no null: ``api_key_env = ""`` says the server needs no key."""
        return None if value == "" else value
