"""The ``wait_for_event`` tool: the agent parks until an event arrives from outside (over the
API or a signed webhook) or the wait times out. The event's payload, or the timeout, becomes
the result of the tool call: the agent holds that result back until then."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.agents.state import EventOutcome, EventWait
from app.agents.tools import Tool, ToolContext, ToolError

EVENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$"
MAX_KEY_CHARS = 200
EventKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_KEY_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")
]
"""The key an event carries and a waiter may ask for: no control characters."""
# How much of an event's payload (as JSON) the model is shown.
MAX_PAYLOAD_CHARS = 50_000


class WaitForEventArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(
        pattern=EVENT_TYPE_PATTERN, description="The type of event to wait for, e.g. ci.finished."
    )
    key: EventKey | None = Field(
        default=None,
        description="Only an event carrying this key wakes you (e.g. a pull request number).",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="How long to wait at most; the default is the longest."
    )


class WaitForEvent(Tool):
    name = "wait_for_event"
    description = (
        "Wait for an event from outside (a CI run finishing, a reply arriving). Your work pauses "
        "until it arrives or the wait times out; the result of this call is then the event's "
        "payload, or a note that the wait timed out. Call it alone, as the last call of a turn."
    )
    Args = WaitForEventArgs

    def __init__(self, max_wait_seconds: float) -> None:
        self.max_wait_seconds = max_wait_seconds

    async def run(self, args: BaseModel, context: ToolContext) -> str:
        assert isinstance(args, WaitForEventArgs)  # invoke() validated against Args
        if context.event_wait is not None:
            raise ToolError("already waiting for an event in this turn; wait for one at a time")
        timeout = min(args.timeout_seconds or self.max_wait_seconds, self.max_wait_seconds)
        context.event_wait = EventWait(
            event_type=args.event_type, key=args.key, timeout_seconds=timeout
        )
        return f"waiting for {args.event_type}"


def describe_outcome(outcome: EventOutcome, wait_seconds: float | None = None) -> str:
    """What the model reads when a wait ends."""
    what = outcome.event_type + (f" (key {outcome.key})" if outcome.key else "")
    if outcome.timed_out:
        waited = f" within {wait_seconds:g} s" if wait_seconds else ""
        return f"The wait for event {what} timed out: no such event arrived{waited}."
    payload = json.dumps(outcome.payload, ensure_ascii=False)
    if len(payload) > MAX_PAYLOAD_CHARS:
        payload = payload[:MAX_PAYLOAD_CHARS] + " [... truncated ...]"
    return f"Event {what} arrived with payload:\n{payload}"
