"""Queue routing: which queue a new execution goes to, and which rule chose it (see
:class:`~app.config_sections.Routing`)."""

from __future__ import annotations

from typing import Literal

from app.agents.spec import AgentTypeSpec
from app.config import Settings
from app.errors import InvalidRequest

QueueReason = Literal["requested", "tier", "agent_type", "estimated_steps", "default"]


def choose_queue(
    settings: Settings,
    *,
    tier: str,
    agent_type: str,
    spec: AgentTypeSpec,
    requested: str | None = None,
    estimated_steps: int | None = None,
) -> tuple[str, QueueReason]:
    """The queue for a start, and the rule that chose it; a ``requested`` queue the tier may
    not use is an :class:`InvalidRequest`."""
    routing, queues = settings.routing, settings.queues
    if requested is not None:
        names = {"default": queues.default, "long": queues.long, "priority": queues.priority}
        allowed = [names[name] for name in routing.requestable.get(tier, ["default"])]
        if requested not in allowed:
            raise InvalidRequest(
                f"The {tier} tier may not use queue {requested!r}; it may use: "
                f"{', '.join(allowed)}.",
                allowed_queues=allowed,
            )
        return requested, "requested"
    if tier in routing.priority_tiers:
        return queues.priority, "tier"
    if agent_type in routing.long_agent_types or spec.queue == queues.long:
        return queues.long, "agent_type"
    if estimated_steps is not None and estimated_steps > routing.long_steps_threshold:
        return queues.long, "estimated_steps"
    return spec.queue, "agent_type" if spec.queue != queues.default else "default"
