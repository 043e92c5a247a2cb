"""Resumable progress streams: replay what the database holds after the client's cursor, then
relay live events, with no gap and no duplicate.

Order matters: subscribe first (the hub returns once Redis confirmed it), then replay from
``agent_logs`` after the cursor, then relay live messages, skipping ids already sent. An event
committed while the replay runs arrives both ways; the id check drops the second copy.
"""

from __future__ import annotations

import asyncio
import enum
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette.event import ServerSentEvent

from app.executions import events, service
from app.executions.models import ExecutionLog
from app.executions.transitions import TERMINAL
from app.streams.hub import Hub, Published, Subscription
from app.streams.limits import Watch

REPLAY_BATCH = 500
CLOSE_SPREAD_SECONDS = 0.2
FINISHED = "finished"


def _is_terminal_change(row: ExecutionLog) -> bool:
    return events.is_status_change(row.event_type, row.context) and row.context["to"] in TERMINAL


def _sse(event: events.Event) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(event.data, default=str), event=event.name, id=str(event.id)
    )


async def _spread_close() -> None:
    """Wait a random moment before closing a finished stream.

    The client already has ``finished``; closing a response (cancelling its helper tasks and
    unwinding the ASGI stack) costs far more than a delivery, and every follower of an execution
    finishes at the same instant. Spread over ``CLOSE_SPREAD_SECONDS``, a thousand closes no
    longer delay the live events of other streams. A client that disconnects first ends it
    at once.
    """
    await asyncio.sleep(random.uniform(0, CLOSE_SPREAD_SECONDS))


def _finished(status: str) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps({"status": status}), event=FINISHED)


class _Ending(enum.Enum):
    FINISHED = "finished"  # the execution is terminal and ``finished`` is among the frames
    CUT = "cut"  # too slow a reader, or the feed was lost: the client resumes


def _drain(
    subscription: Subscription, first: Published | None, last_id: int
) -> tuple[list[bytes], int, _Ending | None]:
    """The SSE frames of ``first`` and of whatever else is queued, skipping ids already sent;
    also the new cursor and whether (and why) the stream ends here."""
    frames: list[bytes] = []
    published = first
    while True:
        if published is None:
            return frames, last_id, _Ending.CUT
        if published.id > last_id:
            last_id = published.id
            frames.append(published.sse_frame)  # encoded once for every subscriber
            if published.event == events.EventName.STATUS_CHANGED:
                current = published.data["status"]
                if current in TERMINAL:
                    frames.append(_finished(current).encode())
                    return frames, last_id, _Ending.FINISHED
        try:
            published = subscription.queue.get_nowait()
        except asyncio.QueueEmpty:
            return frames, last_id, None


def _arm(
    subscription: Subscription,
    streaming: asyncio.Task[object] | None,
    watch: Callable[[Callable[[str], object]], Watch] | None,
) -> Watch | None:
    """Let an overflowing queue end the stream by cancelling its task, and the watch end it
    cleanly (the client reconnects with ``Last-Event-ID``)."""
    if streaming is None:
        return None
    subscription.on_overflow = streaming.cancel

    def end(_why: str) -> None:
        try:
            subscription.queue.put_nowait(None)  # read as "cut": the stream returns
        except asyncio.QueueFull:
            streaming.cancel()

    return None if watch is None else watch(end)


async def execution_events(
    hub: Hub,
    sessions: async_sessionmaker[AsyncSession],
    execution_id: uuid.UUID,
    after_id: int,
    watch: Callable[[Callable[[str], object]], Watch] | None = None,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The SSE events of one execution after log id ``after_id``, until it is terminal (or
    ``watch`` ends it: its lifetime is over, or its token no longer opens it)."""
    subscription = await hub.subscribe(events.execution_channel(execution_id))
    # A client that stops reading blocks our send; when its queue overflows, the task sending to
    # it is cancelled, which ends the response and closes the connection. A watch ends it the
    # same way; the client resumes with Last-Event-ID.
    watching = _arm(subscription, asyncio.current_task(), watch)
    try:
        last_id = after_id
        async with sessions() as session:
            while True:
                execution = await service.read_execution(session, execution_id)
                if execution is None:
                    return
                rows = await service.list_logs(
                    session, execution, after_id=last_id, level=None, event_type=None,
                    limit=REPLAY_BATCH,
                )  # fmt: skip
                if execution.status not in TERMINAL and any(map(_is_terminal_change, rows)):
                    # It ended between the two reads: its live events are among the replayed
                    # ones (and will be skipped), so take the execution as it ended.
                    execution = await service.read_execution(session, execution_id)
                    if execution is None:
                        return
                if rows:
                    completed_at = execution.completed_at
                    yield b"".join(
                        _sse(events.from_log(execution_id, row, completed_at)).encode()
                        for row in rows
                    )
                    last_id = rows[-1].id
                if len(rows) < REPLAY_BATCH:
                    break
            status = execution.status
        if status in TERMINAL:
            yield _finished(status)
            return
        while True:
            queued = await subscription.queue.get()
            frames, last_id, ending = _drain(subscription, queued, last_id)
            if frames:
                # Everything already queued goes out in one write: a burst (the last steps, the
                # status change and ``finished``) costs one send per client, not one per event.
                yield b"".join(frames)
            if ending is _Ending.FINISHED:
                await _spread_close()
            if ending is not None:
                return
    finally:
        hub.release(subscription)
        if watching is not None:
            watching.stop()
