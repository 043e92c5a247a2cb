"""When a cron expression fires, in a time zone, across daylight-saving changes.

Fires are computed on the wall clock of the schedule's zone, then placed on the timeline the way
cron itself does it. A schedule for fixed hours (``30 2 * * *``) fires once a day on both change
days: a wall time that does not exist (the hour skipped in spring) fires just after the gap
(02:30 → 03:30), one that exists twice (the hour repeated in autumn) fires at its first
occurrence only. A schedule for every hour (``0 * * * *``, ``*/15 * * * *``) follows real time:
it fires in both occurrences of the repeated hour, and the skipped hour has no fires to move.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator


def check_cron(expression: str) -> str:
    """``expression`` if it is a valid five-field cron expression; ValueError otherwise."""
    fields = expression.split()
    if len(fields) != 5 or not croniter.is_valid(expression):
        raise ValueError("expected a five-field cron expression, e.g. '0 9 * * 1'")
    return " ".join(fields)


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone; ValueError otherwise."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name)") from None
    return name


Cron = Annotated[str, AfterValidator(check_cron)]
"""A five-field cron expression, as settings and requests take it."""
TimeZone = Annotated[str, AfterValidator(check_timezone)]
"""An IANA time zone name."""


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire strictly after the instant ``after`` (aware), as an aware UTC instant."""
    zone = ZoneInfo(timezone)
    every_hour = expression.split()[1].startswith("*")
    start = after.astimezone(zone).replace(tzinfo=None) - _MAX_SHIFT
    walls = croniter(expression, start)
    best: datetime | None = None
    while True:
        wall = walls.get_next(datetime)
        assert isinstance(wall, datetime)
        for instant in _instants(wall, zone, every_hour=every_hour):
            if instant > after and (best is None or instant < best):
                best = instant
        # Wall times run in order, and a change moves an instant by less than _MAX_SHIFT: once
        # the wall clock is that far past the best fire, no later one can come before it.
        if best is not None and wall - _MAX_SHIFT > best.astimezone(zone).replace(tzinfo=None):
            return best


_MAX_SHIFT = timedelta(hours=3)


def _instants(wall: datetime, zone: ZoneInfo, *, every_hour: bool) -> list[datetime]:
    """The instants a wall time stands for in ``zone``."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    exists = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall
    if exists:  # repeated: the first occurrence, and for every-hour schedules the second too
        return (
            [first.astimezone(UTC), second.astimezone(UTC)]
            if every_hour
            else [first.astimezone(UTC)]
        )
    # Skipped: fold=0 reads it with the offset before the change, which lands after the gap.
    return [] if every_hour else [first.astimezone(UTC)]
