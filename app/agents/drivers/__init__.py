"""Model drivers: one per provider wire protocol, all behind :class:`Driver`."""

from app.agents.drivers.base import Driver, ModelResponse
from app.agents.drivers.openai import OpenAIChatDriver
from app.agents.drivers.scripted import ScriptedDriver

__all__ = ["Driver", "ModelResponse", "OpenAIChatDriver", "ScriptedDriver"]
