"""Fixtures for the agent runtime tests."""

from tests.fixtures.openai_server import fake_openai, fake_openai_server

__all__ = ["fake_openai", "fake_openai_server"]
