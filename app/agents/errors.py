"""Errors an agent run can end with, each with a stable machine-readable ``error_type``."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error that ends an agent run; ``error_type`` goes into ``error.type``."""

    error_type: str = "agent_error"


class ProviderError(AgentError):
    """The model provider failed or answered something unusable.

    ``status_code`` is the provider's last HTTP status, ``None`` when no response was received
    (timeouts, connection errors) or when the failure was not an HTTP one.
    """

    error_type = "provider_error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class MissingApiKey(AgentError):
    """The agent type needs an API key and its environment variable is unset or empty."""

    error_type = "missing_api_key"

    def __init__(self, env_var: str) -> None:
        super().__init__(f"the API key environment variable {env_var} is not set")
        self.env_var = env_var


class ScriptExhausted(ProviderError):
    """A scripted agent was asked for a turn past the end of its script."""

    error_type = "script_exhausted"
