"""Demo data: a subscription SaaS customer base with a believable history.

Every customer is a pure function of `(seed, number, now)`: its own
`random.Random` is seeded from the three, so the same seed and `now` give the
same customers, traits, events and message ids, a run can be cut into chunks
anywhere, and `--customers 1000` after `--customers 500` adds customers
501..1000 without touching the first 500. All times are relative to `now`.

The story of a customer: a signup in the last 120 days (more of them recently),
a 14-day trial, then a paid plan or an expired trial. Usage follows a persona:

- healthy: activates within days, logs in a few times a week, keeps paying;
- at_risk: pays, but usage halves week after week and stops 14+ days ago;
- churning: uses the product, stops, then cancels (or lets the trial lapse);
- never_activated: a login or two after signup, then nothing.

Everything is written through `services.ingest`, the one write path, so
`EventStat` is exact and a rerun with the same seed and `now` stores nothing.
Times are spread over the customer's local day (mostly working hours), with
fewer logins at weekends. Phone numbers come only from ranges the national
regulators reserve for fiction (US 555-01xx, Ofcom's drama numbers, …), so the
demo can never text a real person; customers in countries without such a
range have no phone. Who they are and where they live (names, companies,
regions, phone ranges) is data of its own, in demo_people.py.
"""

import calendar
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .demo_people import (
    COMPANY_WORDS,
    CULTURES,
    NAMES,
    REGION_CUM_WEIGHTS,
    REGIONS,
    SLUGS,
    slug,
    utc_offset_s,
)
from .schemas import Call, GroupIn, IdentifyIn, TrackIn
from .services import IngestResult, ingest

DAY = 86400.0
HISTORY_DAYS = 120
TRIAL_DAYS = 14
AT_RISK_SILENCE_DAYS = 14

HEALTHY = "healthy"
AT_RISK = "at_risk"
CHURNING = "churning"
NEVER_ACTIVATED = "never_activated"
PERSONAS = (HEALTHY, AT_RISK, CHURNING, NEVER_ACTIVATED)

# Monthly list price; an annual plan costs ten months, so its MRR is 10/12 of it.
PLANS = {"starter": 29, "growth": 79, "pro": 199}
_PLAN_NAMES = tuple(PLANS)
_PLAN_WEIGHTS = (50, 35, 15)
_SEATS = {"starter": (1, 3), "growth": (3, 15), "pro": (10, 60)}

FEATURES = (
    "reports",
    "dashboards",
    "exports",
    "integrations",
    "automations",
    "alerts",
    "team_invites",
    "api",
)
_FEATURE_WEIGHTS = (30, 25, 12, 10, 8, 7, 5, 3)
SIGNUP_SOURCES = ("organic", "google_ads", "referral", "content", "partner", "linkedin")
_SOURCE_WEIGHTS = (35, 20, 15, 15, 8, 7)
CANCEL_REASONS = (
    "too_expensive",
    "missing_features",
    "switched_to_competitor",
    "not_using_it",
    "business_closed",
    "other",
)
_CANCEL_WEIGHTS = (30, 20, 15, 20, 5, 10)

EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
# Of the customers with a phone number, those who opted in to SMS.
SMS_OPT_IN_SHARE = 0.8

# --- one customer -----------------------------------------------------------


@dataclass
class DemoCustomer:
    number: int
    external_id: str
    persona: str
    traits: dict[str, Any]
    calls: list[Call] = field(default_factory=list)  # the identify first, then events


def external_id_for(number: int) -> str:
    return f"cus_{number:06d}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_months(ts: float, months: int) -> float:
    """Billing anchored on the start day: Jan 31 → Feb 28 → Mar 31."""
    start = datetime.fromtimestamp(ts, UTC)
    years, month0 = divmod(start.month - 1 + months, 12)
    year, month = start.year + years, month0 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day).timestamp()


def _local_hour(rng: random.Random) -> float:
    # Mostly working hours, a tail into the evening, hardly any at night.
    return min(23.9, max(6.0, rng.gauss(13.5, 3.5)))


class _Builder:
    """Accumulates one customer's events; all times are UTC epoch seconds."""

    def __init__(self, rng: random.Random, now_ts: float, offset_s: float) -> None:
        self.rng = rng
        self.now_ts = now_ts
        self.offset_s = offset_s
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def add(self, ts: float, name: str, properties: dict[str, Any] | None = None) -> None:
        if ts <= self.now_ts:
            self.events.append((ts, name, properties or {}))

    def in_local_hours(self, ts: float) -> float:
        """`ts` moved to a plausible hour of the same local day."""
        local_day = math.floor((ts + self.offset_s) / DAY)
        return local_day * DAY + _local_hour(self.rng) * 3600 - self.offset_s

    def sessions(
        self,
        start: float,
        end: float,
        *,
        per_week: float,
        decay_from: float | None = None,
        half_life_days: float = 7.0,
        max_gap_days: float | None = None,
    ) -> list[float]:
        """Login times in [start, end): a Poisson process per local day, its rate
        halving every `half_life_days` after `decay_from`. Most weekend sessions
        slip to Monday, as real usage of work software does."""
        rng, offset = self.rng, self.offset_s
        base = per_week / 7.0
        day = (start + offset) / DAY
        end_day = (end + offset) / DAY
        decay_day = None if decay_from is None else (decay_from + offset) / DAY
        out: list[float] = []
        while True:
            rate = base
            if decay_day is not None and day > decay_day:
                rate = base * 0.5 ** ((day - decay_day) / half_life_days)
            gap = rng.expovariate(rate)
            if max_gap_days is not None and gap > max_gap_days:
                gap = max_gap_days * (0.5 + 0.5 * rng.random())
            day += gap
            if day >= end_day:
                return out
            local_day = math.floor(day)
            weekday = (local_day + 3) % 7  # 1970-01-01 was a Thursday; 0 is Monday
            if weekday >= 5 and rng.random() < 0.65:
                local_day += 7 - weekday
            ts = local_day * DAY + _local_hour(rng) * 3600 - offset
            if start <= ts < end:
                out.append(ts)

    def usage(
        self,
        logins: list[float],
        *,
        activated_at: float | None,
        end: float,
        features_per_login: float,
    ) -> None:
        """Logins, each followed by some feature use once the customer has
        activated (using features is what activation means here)."""
        rng = self.rng
        for ts in logins:
            self.add(ts, "login")
            if activated_at is None or ts < activated_at:
                continue
            used = 0
            while used < 3 and rng.random() < features_per_login / (1 + features_per_login):
                used += 1
                at = ts + rng.uniform(60, 1800)
                if at < end:
                    feature = rng.choices(FEATURES, _FEATURE_WEIGHTS)[0]
                    self.add(at, "feature_used", {"feature": feature})


def _pick_persona(rng: random.Random, tenure_days: float) -> str:
    # Going quiet for 14+ days while still paying needs a few weeks of history.
    at_risk = 15 if tenure_days >= TRIAL_DAYS + AT_RISK_SILENCE_DAYS + 2 else 0
    return rng.choices(PERSONAS, (45 + 15 - at_risk, at_risk, 22, 18))[0]


def demo_customer(*, seed: int, number: int, now: datetime) -> DemoCustomer:
    """Customer number `number` (1-based) of the demo base for `seed`, as of `now`."""
    rng = random.Random(f"tenure-demo:{seed}:{number}")
    now_ts = float(math.floor(now.timestamp()))
    external_id = external_id_for(number)

    region = rng.choices(REGIONS, cum_weights=REGION_CUM_WEIGHTS)[0]
    zone = rng.choice(region.zones)
    b = _Builder(rng, now_ts, utc_offset_s(zone, now))

    culture = region.culture if rng.random() < 0.8 else rng.choice(CULTURES)
    first_names, last_names = NAMES[culture]
    first, last = rng.choice(first_names), rng.choice(last_names)
    company_name = f"{rng.choice(COMPANY_WORDS[0])} {rng.choice(COMPANY_WORDS[1])}"
    suffix = rng.choice(region.company_suffixes)
    company = f"{company_name} {suffix}".strip()
    first_slug, last_slug = SLUGS[first], SLUGS[last]
    local = rng.choice(
        (f"{first_slug}.{last_slug}", f"{first_slug[0]}{last_slug}", f"{first_slug}_{last_slug}",
         first_slug)
    )  # fmt: skip
    # The customer number keeps every address unique.
    # Work addresses at the company (RFC 2606's .example TLD) or personal ones.
    work = rng.random() < 0.55
    domain = f"{slug(company_name)}.example" if work else rng.choice(EMAIL_DOMAINS)
    email = f"{local}{number}@{domain}"

    traits: dict[str, Any] = {
        "first_name": first,
        "last_name": last,
        "email": email,
        "company": company,
        "country": region.country,
        "locale": region.locale,
    }
    if rng.random() < 0.97:
        traits["timezone"] = zone
    if region.phone_prefixes and rng.random() < 0.9:
        # Walk the fictional range by customer number, so numbers stay unique
        # until the range is used up (US: 2,500 numbers; FR: 60,000).
        size = 10**region.phone_digits
        prefix = region.phone_prefixes[(number // size) % len(region.phone_prefixes)]
        traits["phone"] = f"{prefix}{number % size:0{region.phone_digits}d}"
        # Most agreed to texts at signup (a consent trait: the ledger records it),
        # so SMS steps run in the demo. A generator of its own, so the main
        # one, and every customer the seed already made, stay as they were.
        if random.Random(f"tenure-demo-sms:{seed}:{number}").random() < SMS_OPT_IN_SHARE:
            traits["sms_opt_in"] = True

    # More signups recently: a growing business.
    tenure_days = (HISTORY_DAYS - 1) * rng.random() ** 1.25
    signup = b.in_local_hours(now_ts - tenure_days * DAY)
    if signup > now_ts - 60:
        signup = now_ts - rng.uniform(60, 3600)
    signup = float(math.floor(signup))
    tenure_days = (now_ts - signup) / DAY
    trial_end = signup + TRIAL_DAYS * DAY
    trial_over = trial_end <= now_ts
    persona = _pick_persona(rng, tenure_days)

    plan = rng.choices(_PLAN_NAMES, _PLAN_WEIGHTS)[0]
    annual = rng.random() < 0.15
    price = PLANS[plan]
    mrr = round(price * 10 / 12, 2) if annual else price
    traits.update(
        plan=plan,
        billing_interval="year" if annual else "month",
        seats=rng.randint(*_SEATS[plan]),
        signed_up_at=_iso(signup),
        trial_ends_at=_iso(trial_end),
    )
    source = rng.choices(SIGNUP_SOURCES, _SOURCE_WEIGHTS)[0]
    b.add(signup, "signed_up", {"plan": plan, "source": source})

    # --- usage ---
    usage_end = now_ts
    if persona == HEALTHY and trial_over and rng.random() < 0.18:
        # Liked the trial, did not buy: gone a few days before it ran out.
        persona = CHURNING
        usage_end = trial_end - rng.uniform(1, 4) * DAY
    elif persona == CHURNING:
        usage_end = signup + rng.uniform(3, max(4, tenure_days - 1)) * DAY
    elif persona == AT_RISK:
        latest = now_ts - AT_RISK_SILENCE_DAYS * DAY
        earliest = max(trial_end + 2 * DAY, now_ts - 40 * DAY)
        usage_end = rng.uniform(earliest, latest)

    activated_at: float | None = None
    if persona == NEVER_ACTIVATED:
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            b.add(signup + rng.uniform(0, 4 * DAY), "login")
    else:
        per_week = min(7.0, max(1.5, rng.lognormvariate(math.log(2.2), 0.35)))
        activated_at = signup + min(rng.expovariate(1 / 1.2), 6) * DAY
        if activated_at < min(usage_end, now_ts):
            b.add(activated_at, "activated")
        else:
            activated_at = None
        decay_from = None
        if persona == AT_RISK:
            decay_from = max(signup + 3 * DAY, usage_end - rng.uniform(21, 35) * DAY)
        logins = b.sessions(
            signup + 60,
            usage_end,
            per_week=per_week,
            decay_from=decay_from,
            # Healthy means regular: no week goes by without a visit.
            max_gap_days=5.0 if persona == HEALTHY else None,
        )
        b.usage(
            [signup + rng.uniform(60, 900), *logins],
            activated_at=activated_at,
            end=usage_end,
            features_per_login=rng.uniform(0.2, 0.6),
        )

    # --- billing: those still using it when the trial ends pay ---
    status, paying = "trialing", False
    if trial_over:
        if activated_at is not None and usage_end > trial_end - DAY:
            status, paying = _bill(b, traits, persona, plan, mrr, annual, trial_end, usage_end)
        else:
            status = "canceled"
            b.add(trial_end, "trial_expired", {"plan": plan})
            traits.update(canceled_at=_iso(trial_end), cancel_reason="trial_expired")
    traits.update(status=status, mrr=mrr if paying else 0)

    customer = DemoCustomer(number, external_id, persona, traits)
    customer.calls.append(
        IdentifyIn(
            user_id=external_id,
            traits=traits,
            timestamp=datetime.fromtimestamp(signup, UTC),
            message_id=f"demo-{seed}-{number}-identify",
        )
    )
    if work:
        # Customers at the same company share its account (the `group` call).
        customer.calls.append(
            GroupIn(
                user_id=external_id,
                group_id=f"acct-{slug(company_name)}",
                traits={"name": company_name, "plan": plan, "country": region.country},
                timestamp=datetime.fromtimestamp(signup, UTC),
            )
        )
    b.events.sort(key=lambda e: e[0])
    for k, (ts, name, properties) in enumerate(b.events, start=1):
        customer.calls.append(
            TrackIn(
                user_id=external_id,
                event=name,
                properties=properties,
                timestamp=datetime.fromtimestamp(int(ts), UTC),
                message_id=f"demo-{seed}-{number}-{k}",
            )
        )
    return customer


def _bill(
    b: _Builder,
    traits: dict[str, Any],
    persona: str,
    plan: str,
    mrr: float,
    annual: bool,
    trial_end: float,
    usage_end: float,
) -> tuple[str, bool]:
    """A paid subscription from the end of the trial: renewals, a failed
    payment now and then, a cancellation for those who stopped using it.
    Returns (status, paying)."""
    rng, now_ts = b.rng, b.now_ts
    # Most pay when the trial runs out; some upgrade a little before.
    started = trial_end if rng.random() < 0.7 else trial_end - rng.uniform(0.2, 3) * DAY
    interval = "year" if annual else "month"
    b.add(started, "subscription_started", {"plan": plan, "mrr": mrr, "interval": interval})
    traits["converted_at"] = _iso(started)

    canceled_at = None
    if persona == CHURNING:
        # They stop using it first, and cancel a few days or weeks later.
        canceled_at = max(usage_end + rng.uniform(2, 21) * DAY, started + DAY)
        if canceled_at > now_ts:
            canceled_at = None  # about to churn: still paying, no longer using

    months = 12 if annual else 1
    period, renewal = 1, _add_months(started, months)
    failed_at = None
    while renewal <= now_ts and (canceled_at is None or renewal < canceled_at):
        recent = now_ts - renewal < 12 * DAY
        if recent and persona == HEALTHY and rng.random() < 0.15:
            failed_at = renewal
            b.add(renewal, "payment_failed", {"plan": plan, "mrr": mrr, "reason": "card_declined"})
        else:
            b.add(renewal, "subscription_renewed", {"plan": plan, "mrr": mrr, "period": period})
        period += 1
        renewal = _add_months(started, months * period)

    if canceled_at is not None:
        reason = rng.choices(CANCEL_REASONS, _CANCEL_WEIGHTS)[0]
        b.add(canceled_at, "subscription_canceled", {"plan": plan, "mrr": mrr, "reason": reason})
        traits.update(canceled_at=_iso(canceled_at), cancel_reason=reason)
        return "canceled", False
    traits["renewal_at"] = _iso(renewal)
    return ("past_due" if failed_at is not None else "active"), True


def demo_customers(
    *, seed: int, now: datetime, count: int, start: int = 1
) -> Iterator[DemoCustomer]:
    for number in range(start, start + count):
        yield demo_customer(seed=seed, number=number, now=now)


# --- writing ----------------------------------------------------------------


@dataclass
class SeedReport:
    customers: int = 0
    calls: int = 0
    stored: IngestResult = field(default_factory=IngestResult)


def demo_seed(
    *,
    customers: int,
    seed: int,
    now: datetime,
    chunk_size: int = 5000,
    on_progress: Callable[[int], None] | None = None,
) -> SeedReport:
    """Write `customers` demo customers through `ingest`, about `chunk_size`
    calls (whole customers) per transaction. Memory stays bounded by a chunk.
    `on_progress(n)` is called with the customers written since the last call."""
    report = SeedReport()
    pending: list[Call] = []
    pending_customers = 0

    def flush() -> None:
        nonlocal pending_customers
        result = ingest(pending, received_at=now, source="demo")
        result.event_ids = []  # not needed, and a million of them is memory
        report.stored.add(result)
        report.calls += len(pending)
        report.customers += pending_customers
        if on_progress:
            on_progress(pending_customers)
        pending.clear()
        pending_customers = 0

    for customer in demo_customers(seed=seed, now=now, count=customers):
        pending.extend(customer.calls)
        pending_customers += 1
        if len(pending) >= chunk_size:
            flush()
    if pending:
        flush()
    return report
