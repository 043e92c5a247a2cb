"""Fixtures for the agent runtime tests."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.agents.drivers.clients import ModelClient, ModelHttpClient
from app.agents.state import Message
from tests.fixtures.anthropic_server import fake_anthropic, fake_anthropic_server
from tests.fixtures.openai_server import fake_openai, fake_openai_server

__all__ = ["fake_anthropic", "fake_anthropic_server", "fake_openai", "fake_openai_server"]

CONVERSATION = [Message(role="system", content="be brief"), Message(role="user", content="hi")]
"""A short conversation for the provider driver tests."""


@pytest.fixture
def root(reachable_tmp: Path) -> Path:
    """An empty workspace directory (that a sandbox running as another user can reach)."""
    workspace = reachable_tmp / "workspace"
    workspace.mkdir()
    return workspace


@pytest.fixture(params=["worker", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[ModelClient]:
    """The HTTP client the drivers share: the workers' own, and a plain httpx client (which
    the drivers accept too). trust_env=False: a proxy configured in the environment must not
    intercept 127.0.0.1."""
    if request.param == "worker":
        client = ModelHttpClient(100, trust_env=False)
        yield client
        await client.aclose()
    else:
        async with httpx.AsyncClient(trust_env=False) as plain:
            yield plain
