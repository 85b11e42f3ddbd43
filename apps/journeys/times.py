"""Time in journeys, and the words steps use for it.

A customer's zone (UTC, with a note saying why, when theirs is missing or
unknown), the next local time of day on allowed weekdays (`wait_until`), and
how a step's detail writes a moment and a span. The engine's node handlers,
the triggers (a date trait's moment in the customer's zone) and the
backtest's notes use them; none of them needs the engine for it.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apps.customers.models import Customer

from .graph import WEEKDAYS


def when(moment: datetime, zone: ZoneInfo | None = None) -> str:
    """A time in a step's detail: UTC, and the customer's local time if given."""
    text = f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if zone is not None and getattr(zone, "key", "UTC") != "UTC":
        text += f" ({moment.astimezone(zone):%a %H:%M} {zone.key})"
    return text


def span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts) or f"{seconds} seconds"


def customer_zone(customer: Customer) -> tuple[ZoneInfo, str]:
    """The customer's zone, or UTC with a note saying why."""
    return zone_named(customer.timezone)


def zone_named(name: str | None) -> tuple[ZoneInfo, str]:
    """The zone of this name, or UTC with a note saying why."""
    if not name:
        return ZoneInfo("UTC"), "the customer has no time zone; used UTC"
    try:
        return ZoneInfo(name), ""
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC"), f"unknown time zone {name!r}; used UTC"


def next_local_time(
    after: datetime, zone: ZoneInfo, at: str, weekdays: Sequence[str] | None
) -> datetime:
    """The first moment at or after `after` that is `at` (HH:MM) on one of
    `weekdays` in `zone` (UTC, aware). A time skipped by a daylight-saving
    change is taken with the offset before the change."""
    hour, minute = (int(part) for part in at.split(":"))
    local = after.astimezone(zone)
    for days in range(8):
        day = local.date() + timedelta(days=days)
        if weekdays and WEEKDAYS[day.weekday()] not in weekdays:
            continue
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
        if candidate >= after:
            return candidate
    raise ValueError(f"no {at} on {weekdays} within a week")  # weekdays is never empty
