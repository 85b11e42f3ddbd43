"""Send windows in time zones: the allowed local times of day a setting
names (SEND_HOURS_EMAIL / _SMS: "08:00-21:00"), the next instant a window
opens (or closes) in a zone, daylight saving exact, and, for a customer
whose zone is unknown, the zones they could be in (their country's, else the
world's) and the times inside the window in all (or most) of them. The quiet
hours policy (policies.py) asks these questions.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, available_timezones

from django.core.exceptions import ImproperlyConfigured

from apps.customers.models import Customer

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
DAY_S = 86400


@dataclass(frozen=True)
class SendWindow:
    """Allowed local times of day, [start, end) in seconds after midnight;
    start > end spans midnight (22:00-06:00)."""

    start: int
    end: int
    text: str  # "08:00-21:00"

    def contains(self, seconds: float) -> bool:
        if self.start < self.end:
            return self.start <= seconds < self.end
        return seconds >= self.start or seconds < self.end


@lru_cache(maxsize=64)
def parse_window(value: str, *, setting: str = "send hours") -> SendWindow | None:
    """ "08:00-21:00" → allowed from 08:00 until 21:00 (exclusive); blank →
    any time. "22:00-06:00" spans midnight; "24:00" may end a window."""
    if not value or not value.strip():
        return None
    match = _WINDOW.match(value)
    if match is None:
        raise ImproperlyConfigured(f"{setting}: {value!r} is not a window like 08:00-21:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
        raise ImproperlyConfigured(f"{setting}: {value!r} has a time that does not exist")
    start, end = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
    if start == end % DAY_S:
        raise ImproperlyConfigured(
            f"{setting}: {value!r} is empty or the whole day; leave it blank for any time"
        )
    return SendWindow(start, end, f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}")


def _offset(zone: ZoneInfo, at: datetime) -> timedelta:
    return at.astimezone(zone).utcoffset() or timedelta(0)


def _first_transition(zone: ZoneInfo, start: datetime, end: datetime) -> datetime | None:
    """The first instant in (start, end] at which the zone's UTC offset
    changes, to the second (transitions are on whole seconds). Offsets are
    sampled every 6 hours (no zone changes twice in that time), then the
    change is bisected."""
    offset = _offset(zone, start)
    lo = int(start.timestamp())
    while lo < end.timestamp():
        hi = min(lo + 6 * 3600, int(end.timestamp()) + 1)
        if _offset(zone, datetime.fromtimestamp(hi, UTC)) != offset:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, datetime.fromtimestamp(mid, UTC)) == offset:
                    lo = mid
                else:
                    hi = mid
            found = datetime.fromtimestamp(hi, UTC)
            return found if found > start else None
        lo = hi
    return None


def next_in_window(
    zone: ZoneInfo, window: SendWindow, at: datetime, *, inside: bool = True
) -> datetime:
    """The earliest instant from `at` on at which the local time in `zone` is
    inside `window` (or outside, with inside=False).

    Within a stretch of constant UTC offset, local time is UTC plus the
    offset, so the next boundary is plain arithmetic; if the zone changes its
    offset before reaching it (daylight saving), the search continues from the
    change, where the local clock has jumped. So a window opening inside a
    skipped hour opens when the clock jumps past it, and one opening in a
    repeated hour opens the first time."""
    at = at.astimezone(UTC)
    for _ in range(8):
        offset = _offset(zone, at)
        local = (at + offset).replace(tzinfo=None)
        seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        if window.contains(seconds) == inside:
            return at
        boundary = window.start if inside else window.end
        candidate = datetime.combine(local.date(), time()) + timedelta(seconds=boundary)
        if candidate <= local:
            candidate += timedelta(days=1)
        found = (candidate - offset).replace(tzinfo=UTC)
        transition = _first_transition(zone, at, found)
        if transition is None or found < transition:
            return found
        at = transition
    raise AssertionError(f"no window boundary found in {zone.key} after {at}")


# Where the zones of a country are listed (the tz database's own table).
_ZONE_TABLES = ("zone.tab", "zone1970.tab")


def _tzdata_root() -> str:
    """The `tzdata` package's copy of the tz database (a dependency), for
    machines without /usr/share/zoneinfo."""
    import tzdata

    return str(Path(tzdata.__file__).parent / "zoneinfo")


@cache
def zones_by_country() -> dict[str, tuple[str, ...]]:
    """ISO 3166 country code → its IANA zones, from the tz database's
    zone.tab (empty if the system has none: then nothing narrows)."""
    for root in (*TZPATH, _tzdata_root()):
        for name in _ZONE_TABLES:
            path = Path(root) / name
            if path.exists():
                table: dict[str, list[str]] = {}
                for line in path.read_text().splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    codes, _, zone = line.split("\t")[:3]
                    for code in codes.split(","):
                        table.setdefault(code, []).append(zone)
                return {code: tuple(sorted(zones)) for code, zones in table.items()}
    return {}


@cache
def world_zones() -> tuple[str, ...]:
    """Every inhabited zone: those zone.tab assigns to a country, or (without
    it) the region/city zones zoneinfo knows."""
    listed = {zone for zones in zones_by_country().values() for zone in zones}
    if listed:
        return tuple(sorted(listed))
    regions = ("Africa/", "America/", "Antarctica/", "Asia/", "Atlantic/", "Australia/",
               "Europe/", "Indian/", "Pacific/")  # fmt: skip
    return tuple(sorted(z for z in available_timezones() if z.startswith(regions)))


def customer_country(customer: Customer) -> str:
    """The customer's country, as an ISO code, if the data says: the
    `country` trait, else the region of the locale (en-GB → GB)."""
    traits = customer.traits or {}
    country = traits.get("country")
    if isinstance(country, str) and country.strip().upper() in zones_by_country():
        return country.strip().upper()
    parts = re.split(r"[-_]", customer.locale or "")
    for part in parts[1:]:
        if len(part) == 2 and part.upper() in zones_by_country():
            return part.upper()
    return ""


def customer_zone(customer: Customer) -> ZoneInfo | None:
    """The customer's zone, or None if it is missing or not an IANA zone."""
    name = (customer.timezone or "").strip()
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        return None


@lru_cache(maxsize=4096)
def unknown_zone_intervals(
    zones: tuple[str, ...], window: SendWindow, day: date
) -> tuple[int, tuple[tuple[datetime, datetime], ...]]:
    """For a customer whose zone is unknown but is one of `zones`: the
    intervals of the UTC `day` that are inside `window` in every one of them
    (the intersection, computed per zone with daylight saving). If no instant
    is (over the whole world none is: local times span 26 hours, more than
    any window), the intervals inside it in the largest number of zones.
    Returns (that number, intervals)."""
    day_start = datetime.combine(day, time(), tzinfo=UTC)
    day_end = day_start + timedelta(days=1)
    edges: list[tuple[datetime, int]] = []
    for name in zones:
        zone = ZoneInfo(name)
        at = day_start
        while at < day_end:
            start = next_in_window(zone, window, at)
            if start >= day_end:
                break
            end = min(next_in_window(zone, window, start, inside=False), day_end)
            edges += [(start, 1), (end, -1)]
            at = end
    edges.sort(key=lambda edge: (edge[0], edge[1]))  # ends before starts at one instant
    coverage, best, intervals = 0, 0, []
    for i, (instant, change) in enumerate(edges):
        coverage += change
        following = edges[i + 1][0] if i + 1 < len(edges) else day_end
        if following <= instant:
            continue
        if coverage > best:
            best, intervals = coverage, [(instant, following)]
        elif coverage == best and coverage:
            if intervals and intervals[-1][1] == instant:
                intervals[-1] = (intervals[-1][0], following)
            else:
                intervals.append((instant, following))
    return best, tuple(intervals)


def next_in_intervals(zones: tuple[str, ...], window: SendWindow, at: datetime) -> datetime:
    at = at.astimezone(UTC)
    for days in range(4):
        _, intervals = unknown_zone_intervals(zones, window, at.date() + timedelta(days=days))
        for start, end in intervals:
            if end > at:
                return max(start, at)
    raise AssertionError("every day has an interval where the most zones allow sending")


def possible_zones(customer: Customer) -> tuple[tuple[str, ...], str]:
    """The zones a customer of unknown zone could be in, and how we know:
    their country's (trait or locale), else the whole world's."""
    country = customer_country(customer)
    if country:
        return zones_by_country()[country], f"the zones of {country}"
    return world_zones(), "all zones"
