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
   The time-zone arithmetic of send windows lives in send_windows.py.

Test sends skip consent, caps and quiet hours (a marketer testing on their
own address), never the address and suppression checks.
"""

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache

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
from .send_windows import (
    SendWindow,
    customer_zone,
    next_in_intervals,
    next_in_window,
    parse_window,
    possible_zones,
    unknown_zone_intervals,
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
    """The address to send to: `to_address` if given, else the customer's own.
    Anonymous visitors and merged profiles are never sent to (journeys do
    not enroll them; this holds for any other path too)."""
    if customer.external_id is None:
        return Decision(SUPPRESS, "anonymous visitor: not identified, never messaged")
    if customer.merged_into_id is not None:
        return Decision(SUPPRESS, f"merged into customer {customer.merged_into_id}")
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
        allowed = next_in_intervals(zones, window, at)
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
