"""Stopping running chunks at once: cancel and kill requests reach the worker on the
execution's control channel, and the worker cancels the task running that execution (its model
call or tool is interrupted; the bash tool kills its process group on cancellation)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger(__name__)

CONTROL_PATTERN = "agent.*.control"


def control_channel(execution_id: uuid.UUID | str) -> str:
    """The channel on which workers hear that an execution must stop now."""
    return f"agent.{execution_id}.control"


class RunningChunks:
    """The executions this worker process is stepping, and how to stop each."""

    def __init__(self) -> None:
        self._stoppers: dict[uuid.UUID, Callable[[], None]] = {}

    def add(self, execution_id: uuid.UUID, stop: Callable[[], None]) -> None:
        self._stoppers[execution_id] = stop

    def discard(self, execution_id: uuid.UUID) -> None:
        self._stoppers.pop(execution_id, None)

    def stop(self, execution_id: uuid.UUID) -> bool:
        stop = self._stoppers.pop(execution_id, None)
        if stop is None:
            return False
        stop()
        return True


async def listen_for_stops(redis_url: str, running: RunningChunks) -> None:
    """Stop running chunks as their control messages arrive; reconnects until cancelled."""
    delay = 0.1
    while True:
        client = Redis.from_url(redis_url)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.psubscribe(CONTROL_PATTERN)
                delay = 0.1
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        _dispatch(message["channel"], message["data"], running)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("control channel lost; reconnecting in %.1fs", delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            await client.aclose()


def _dispatch(channel: bytes | str, data: bytes | str, running: RunningChunks) -> None:
    """Stop the execution named by ``channel``; ``data`` is the request (``cancel``, ``kill``)."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    request = data.decode(errors="replace") if isinstance(data, bytes) else data
    try:
        execution_id = uuid.UUID(name.split(".")[1])
    except (IndexError, ValueError):
        return
    if running.stop(execution_id):
        log.info("stopped execution %s on a %.20s request", execution_id, request)
