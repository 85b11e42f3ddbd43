"""The rules a send must pass, each answering with a decision and its reason
in words (docs/policies.md). `message_send` runs them in this order and keeps
the first refusal on the Message row, so a marketer can always see why a
customer did or did not get a message:

1. address   — the customer has an address for the channel, and it is valid;
2. suppression — the address is not on the suppression list (an unsubscribe
   blocks marketing only; bounces, complaints, invalid addresses, manual
   entries and SMS opt-outs block everything);
3. consent   — SMS needs an explicit opt-in (any SMS); marketing email needs
   no opt-out (or an opt-in, with EMAIL_MARKETING_REQUIRES_OPT_IN), per topic;
   transactional email needs none;
4. frequency cap — marketing only, per channel, counted across every journey
   from the Message rows (FREQUENCY_CAP_EMAIL / _SMS): skipped, or deferred
   to when the window frees if the caller asks (`over_cap="defer"`);
5. quiet hours — marketing only, per channel, in the customer's own zone
   (SEND_HOURS_EMAIL / _SMS): deferred to the next allowed minute, never
   dropped. Daylight saving is exact (zoneinfo). A customer whose zone is
   unknown gets the most restrictive window: only the times inside the
   window in every zone they could be in (see `unknown_zone_intervals`).

Test sends skip consent, caps and quiet hours (a marketer testing on their
own address), never the address and suppression checks.
"""

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo, available_timezones

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from apps.customers.models import Customer

from .consent import BLOCKS_TRANSACTIONAL, SUPPRESSION_WORDS
from .models import Category, Channel, Suppression, Template
from .selectors import (
    active_suppression,
    active_suppressions,
    consent_from_latest,
    consent_latest_many,
    consent_state,
    marketing_send_times,
    marketing_send_times_many,
    normalize_address,
)

SEND, DEFER, SUPPRESS = "send", "defer", "suppress"
OVER_CAP_CHOICES = ("skip", "defer")


@dataclass(frozen=True)
class Decision:
    """What a policy (or all of them) says about one send. `address` is the
    normalised address the message goes to, once the address check ran."""

    outcome: str = SEND
    reason: str = ""
    send_after: datetime | None = None
    address: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome == SEND


ALLOW = Decision()


# --- what the policies read ----------------------------------------------------


class Facts:
    """What the policies read from the database, asked one send at a time:
    each question is a query. `BatchFacts` answers the same questions for a
    batch of sends from three queries in all."""

    def suppression(self, channel: str, address: str) -> Suppression | None:
        return active_suppression(channel, address)

    def consent(self, customer_id: int, channel: str, topic: str = "") -> bool | None:
        return consent_state(customer_id, channel, topic)

    def send_times(self, customer_id: int, channel: str, since: datetime) -> list[datetime]:
        return marketing_send_times(customer_id, channel, since=since)

    def note_send(self, customer_id: int, channel: str, at: datetime) -> None:
        """A marketing send about to be written (one-at-a-time: it will be in
        the table by the next question)."""


LIVE = Facts()


class BatchFacts(Facts):
    """The facts for a batch of sends, loaded up front: the suppressions of
    their addresses, their customers' consent ledgers and their marketing
    send times (from `now` less the longest cap window). Sends decided in
    the batch are noted, so a later send's frequency cap counts them."""

    def __init__(
        self, *, customer_ids: Iterable[int], addresses: Iterable[tuple[str, str]], now: datetime
    ) -> None:
        customer_ids = set(customer_ids)
        windows = [cap.window for c in Channel.values if (cap := channel_cap(c)) is not None]
        self._since = now - max(windows, default=timedelta(0))
        self._suppressions = active_suppressions(addresses)
        self._consent = consent_latest_many(customer_ids)
        self._times = marketing_send_times_many(customer_ids, since=self._since) if windows else {}

    def suppression(self, channel: str, address: str) -> Suppression | None:
        return self._suppressions.get((channel, address))

    def consent(self, customer_id: int, channel: str, topic: str = "") -> bool | None:
        return consent_from_latest(self._consent.get((customer_id, channel), {}), topic)

    def send_times(self, customer_id: int, channel: str, since: datetime) -> list[datetime]:
        if since < self._since:
            raise AssertionError("asked for send times before the batch loaded them")
        return [t for t in self._times.get((customer_id, channel), ()) if t >= since]

    def note_send(self, customer_id: int, channel: str, at: datetime) -> None:
        bisect.insort(self._times.setdefault((customer_id, channel), []), at)


# --- settings ----------------------------------------------------------------

_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class FrequencyCap:
    limit: int
    window: timedelta
    text: str  # as configured, "3/7d"


@lru_cache(maxsize=64)  # read per send; a setting changed in a test is another value
def parse_cap(value: str, *, setting: str = "frequency cap") -> FrequencyCap | None:
    """ "3/7d" → at most 3 in any 7 days; blank → no cap. Units m, h, d, w."""
    if not value or not value.strip():
        return None
    match = _CAP.match(value)
    if match is None:
        raise ImproperlyConfigured(
            f"{setting}: {value!r} is not a cap like 3/7d (count / number + m, h, d or w)"
        )
    limit, amount, unit = int(match[1]), int(match[2]), match[3]
    if limit < 1 or amount < 1:
        raise ImproperlyConfigured(f"{setting}: {value!r} needs a count and a window above 0")
    return FrequencyCap(limit, timedelta(**{_UNITS[unit]: amount}), f"{limit}/{amount}{unit}")


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


def channel_cap(channel: str) -> FrequencyCap | None:
    setting = f"FREQUENCY_CAP_{channel.upper()}"
    return parse_cap(getattr(settings, setting, ""), setting=setting)


def channel_window(channel: str) -> SendWindow | None:
    setting = f"SEND_HOURS_{channel.upper()}"
    return parse_window(getattr(settings, setting, ""), setting=setting)


@checks.register(checks.Tags.compatibility)
def settings_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Bad caps or send hours are reported at start-up, not at the first send."""
    errors = []
    for channel in Channel.values:
        for read in (channel_cap, channel_window):
            try:
                read(channel)
            except ImproperlyConfigured as exc:
                errors.append(checks.Error(str(exc), id="messaging.E001"))
    return errors


# --- 1. address --------------------------------------------------------------


def check_address(customer: Customer, channel: str, to_address: str | None = None) -> Decision:
    """The address to send to: `to_address` if given, else the customer's own."""
    address = to_address if to_address is not None else (
        customer.email if channel == Channel.EMAIL else customer.phone
    )  # fmt: skip
    if not address:
        what = "email address" if channel == Channel.EMAIL else "phone number"
        return Decision(SUPPRESS, f"no address: the customer has no {what}")
    try:
        return Decision(address=normalize_address(channel, address))
    except ValueError as exc:
        return Decision(SUPPRESS, f"invalid address: {exc}")


# --- 2. suppression ----------------------------------------------------------


def check_suppression(
    channel: str, address: str, category: str, *, facts: Facts = LIVE
) -> Decision:
    suppression = facts.suppression(channel, address)
    if suppression is None:
        return ALLOW
    if category == Category.TRANSACTIONAL and suppression.reason not in BLOCKS_TRANSACTIONAL:
        return ALLOW  # unsubscribed from marketing; receipts still go
    return Decision(SUPPRESS, f"suppressed: {SUPPRESSION_WORDS.get(suppression.reason, 'listed')}")


# --- 3. consent --------------------------------------------------------------


def check_consent(
    customer: Customer | int, channel: str, category: str, topic: str = "", *, facts: Facts = LIVE
) -> Decision:
    customer_id = customer if isinstance(customer, int) else customer.pk
    if channel == Channel.SMS:
        state = facts.consent(customer_id, Channel.SMS)
        if state is None:
            return Decision(SUPPRESS, "no consent: sms")
        if state is False:
            return Decision(SUPPRESS, "no consent: sms (opted out)")
        return ALLOW
    if category == Category.TRANSACTIONAL:
        return ALLOW
    channel_state = facts.consent(customer_id, Channel.EMAIL)
    if channel_state is False:
        return Decision(SUPPRESS, "no consent: email (opted out)")  # of every topic
    # A topic without records of its own follows the channel.
    state = facts.consent(customer_id, Channel.EMAIL, topic) if topic else channel_state
    what = f"email topic {topic}" if topic else "email"
    if state is False:
        return Decision(SUPPRESS, f"no consent: {what} (opted out)")
    if state is None and settings.EMAIL_MARKETING_REQUIRES_OPT_IN:
        return Decision(SUPPRESS, f"no consent: {what} (no opt-in; opt-in is required)")
    return ALLOW


# --- 4. frequency caps -------------------------------------------------------


def cap_fits(at: datetime, times: Sequence[datetime], cap: FrequencyCap) -> bool:
    """Whether one more message at `at` keeps every window of `cap.window`
    (half-open: [a, a + window)) at no more than `cap.limit` messages, given
    the other messages' times (past, and future ones already scheduled)."""
    w = cap.window
    nearby = [t for t in times if at - w < t < at + w]
    if len(nearby) < cap.limit:
        return True
    # The windows holding `at` start in (at - w, at]; the fullest start just
    # after at - w, at one of the messages, or at `at` itself.
    counts = [sum(1 for t in nearby if t <= at)]
    for start in [t for t in nearby if t <= at] + [at]:
        counts.append(sum(1 for t in nearby if start <= t < start + w))
    return max(counts) < cap.limit


def cap_next_fit(at: datetime, times: Sequence[datetime], cap: FrequencyCap) -> datetime:
    """The earliest time from `at` on when one more message fits the cap:
    `at` itself, or the moment an earlier message leaves the window."""
    for candidate in sorted({at, *(t + cap.window for t in times if t + cap.window > at)}):
        if cap_fits(candidate, times, cap):
            return candidate
    raise AssertionError("unreachable: after the last message's window every time fits")


def check_frequency_cap(
    customer: Customer | int,
    channel: str,
    category: str,
    at: datetime,
    *,
    over_cap: str = "skip",
    facts: Facts = LIVE,
) -> Decision:
    """Whether a marketing message at `at` stays within the channel's cap,
    across every journey. Over it: skipped, or (over_cap="defer") deferred to
    the earliest time it fits."""
    cap = channel_cap(channel)
    if cap is None or category != Category.MARKETING:
        return ALLOW
    customer_id = customer if isinstance(customer, int) else customer.pk
    times = facts.send_times(customer_id, channel, at - cap.window)
    if cap_fits(at, times, cap):
        return ALLOW
    if over_cap == "defer":
        return Decision(
            DEFER, f"deferred: frequency cap {cap.text}", send_after=cap_next_fit(at, times, cap)
        )
    return Decision(SUPPRESS, f"skipped: frequency cap {cap.text}")


# --- 5. quiet hours ----------------------------------------------------------


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


def _next_in_intervals(zones: tuple[str, ...], window: SendWindow, at: datetime) -> datetime:
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


def quiet_hours_next(
    customer: Customer, channel: str, category: str, at: datetime
) -> tuple[datetime | None, str]:
    """(when the message may go if not at `at`, the reason), or (None, "") if
    it may go at `at`."""
    window = channel_window(channel)
    if window is None or category != Category.MARKETING:
        return None, ""
    zone = customer_zone(customer)
    if zone is not None:
        allowed = next_in_window(zone, window, at)
        reason = f"deferred: quiet hours ({channel} {window.text} {zone.key})"
    else:
        zones, described = possible_zones(customer)
        allowed = _next_in_intervals(zones, window, at)
        count, _ = unknown_zone_intervals(zones, window, allowed.date())
        scope = "every one" if count == len(zones) else f"the most ({count} of {len(zones)})"
        reason = (
            f"deferred: quiet hours ({channel} {window.text}; time zone unknown: "
            f"sent when inside the window in {scope} of {described})"
        )
    return (None, "") if allowed <= at else (allowed, reason)


def check_quiet_hours(customer: Customer, channel: str, category: str, at: datetime) -> Decision:
    allowed, reason = quiet_hours_next(customer, channel, category, at)
    if allowed is None:
        return ALLOW
    return Decision(DEFER, reason, send_after=allowed)


# --- all of them -------------------------------------------------------------


def evaluate(
    *,
    customer: Customer,
    template: Template,
    now: datetime,
    to_address: str | None = None,
    over_cap: str = "skip",
    is_test: bool = False,
    facts: Facts = LIVE,
) -> Decision:
    """Every policy, in order; the first refusal wins. A send that may not go
    now is deferred to the first time both the cap and the quiet hours allow
    (each deferral checked against the other), never dropped. `facts`
    answers the policies' reads (BatchFacts for a batch of sends); a send
    allowed or deferred here is noted in it."""
    if over_cap not in OVER_CAP_CHOICES:
        raise ValueError(f"over_cap: must be 'skip' or 'defer', got {over_cap!r}")
    channel, category = template.channel, template.category
    address = check_address(customer, channel, to_address)
    if not address.allowed:
        return address
    found = address.address
    decision = check_suppression(channel, found, category, facts=facts)
    if not decision.allowed or is_test:
        return replace(decision, address=found)
    decision = check_consent(customer, channel, category, template.topic, facts=facts)
    if not decision.allowed:
        return replace(decision, address=found)

    # When it may go: quiet hours first (the cap is judged at the real time).
    at, reasons = now, []
    for _ in range(16):
        quiet_at, quiet_reason = quiet_hours_next(customer, channel, category, at)
        if quiet_at is not None:
            at = quiet_at
            reasons.append(quiet_reason)
        cap = check_frequency_cap(customer, channel, category, at, over_cap=over_cap, facts=facts)
        if cap.outcome == SUPPRESS:
            return replace(cap, address=found)
        if cap.outcome == SEND:
            break
        at = cap.send_after
        reasons.append(cap.reason)
    else:
        raise AssertionError("quiet hours and the frequency cap never agreed on a time")
    if category == Category.MARKETING:
        facts.note_send(customer.pk, channel, at)
    if at <= now:
        return Decision(address=found)
    # The cap's reason first if it deferred at all: it is the cause.
    reason = next((r for r in reasons if "frequency cap" in r), reasons[0])
    return Decision(DEFER, reason, send_after=at, address=found)


@dataclass(frozen=True)
class Ask:
    """One send for `evaluate_many`: `evaluate`'s arguments less `now`."""

    customer: Customer
    template: Template
    to_address: str | None = None
    over_cap: str = "skip"
    is_test: bool = False


def evaluate_many(asks: Sequence[Ask], *, now: datetime) -> list[Decision]:
    """`evaluate` for each send of a batch, in order, reading the database
    three times in all (BatchFacts) instead of three times per send. A
    send's frequency cap counts the batch's earlier sends."""
    addresses = []
    for ask in asks:
        address = check_address(ask.customer, ask.template.channel, ask.to_address)
        if address.allowed:
            addresses.append((ask.template.channel, address.address))
    facts = BatchFacts(customer_ids={ask.customer.pk for ask in asks}, addresses=addresses, now=now)
    return [
        evaluate(
            customer=ask.customer,
            template=ask.template,
            now=now,
            to_address=ask.to_address,
            over_cap=ask.over_cap,
            is_test=ask.is_test,
            facts=facts,
        )
        for ask in asks
    ]
