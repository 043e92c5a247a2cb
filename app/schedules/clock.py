"""When a cron expression fires, in a time zone, across daylight-saving changes.

Fires are computed on the wall clock of the schedule's zone, then placed on the timeline: a
wall time that does not exist (the hour skipped in spring) fires at the same distance into the
new offset (02:30 → 03:30), and one that exists twice (the hour repeated in autumn) fires at its
first occurrence only. So a daily schedule fires exactly once on both days.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


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


def next_fire(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire strictly after the instant ``after`` (aware), as an aware UTC instant."""
    zone = ZoneInfo(timezone)
    wall = after.astimezone(zone).replace(tzinfo=None)
    while True:
        wall = croniter(expression, wall).get_next(datetime)
        assert isinstance(wall, datetime)
        # fold=0: a repeated wall time means its first occurrence; a skipped one lands after
        # the gap.
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if instant > after:
            return instant
