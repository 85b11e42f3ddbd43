"""Retention: subscribers and MRR from the subscription events, churn and
renewals by month, and signup cohorts' activity month by month."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from django.db.models import Count, Exists, FloatField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncMonth

from apps.customers.models import Event, EventStat

from .windows import add_months, as_date, month_start, percent

STARTED, RENEWED = "subscription_started", "subscription_renewed"
CANCELED, PAYMENT_FAILED, SIGNED_UP = "subscription_canceled", "payment_failed", "signed_up"
# Event names our own machinery records about a customer (engagement with
# our messages, survey answers): they are not the customer using the product.
DERIVED_PREFIXES = ("email_", "sms_", "nps_")
DERIVED_NAMES = ("unsubscribed",)


def active_subscriptions(at: datetime) -> QuerySet[Event]:
    """The latest `subscription_started` before `at` of each customer not
    cancelled since: one row per active subscriber (past-due ones included)."""
    latest = (
        Event.objects.filter(customer=OuterRef("customer"), name=STARTED, occurred_at__lt=at)
        .order_by("-occurred_at", "-pk")
        .values("pk")[:1]
    )
    canceled = Event.objects.filter(
        customer=OuterRef("customer"),
        name=CANCELED,
        occurred_at__gte=OuterRef("occurred_at"),
        occurred_at__lt=at,
    )
    return (
        Event.objects.filter(name=STARTED, occurred_at__lt=at, pk=Subquery(latest))
        .filter(_KNOWN)
        .exclude(Exists(canceled))
    )


# Known customers only (identified, not merged): anonymous visitors are not
# counted as subscribers or in cohorts (a merged profile's events moved to the
# customer it became).
_KNOWN = Q(customer__external_id__isnull=False, customer__merged_into__isnull=True)


def _mrr_sum() -> Sum:
    return Sum(Cast(KT("properties__mrr"), FloatField()))


def subscribers_at(at: datetime) -> tuple[int, float]:
    """(active subscribers, MRR) at a moment, in one query."""
    row = active_subscriptions(at).aggregate(n=Count("id"), mrr=_mrr_sum())
    return row["n"], round(row["mrr"] or 0.0, 2)


@dataclass(frozen=True)
class MonthRow:
    month: date
    active_at_start: int
    started: int
    renewed: int
    payment_failed: int
    canceled: int
    active_at_end: int
    mrr_at_end: float

    @property
    def churn_rate(self) -> float | None:
        """Cancellations in the month over subscribers at its start, %."""
        return percent(self.canceled, self.active_at_start)

    @property
    def renewal_rate(self) -> float | None:
        """Renewals over the month's renewals, failed payments and cancellations, %."""
        return percent(self.renewed, self.renewed + self.payment_failed + self.canceled)


def retention_by_month(*, now: datetime, months: int = 6) -> list[MonthRow]:
    """The last `months` calendar months (UTC) up to `now`, the current one
    partial: subscription events counted by month (one grouped query) and
    active subscribers and MRR at each month boundary (one query each)."""
    if not 1 <= months <= 36:
        raise ValueError(f"months: must be between 1 and 36, got {months}")
    first = add_months(month_start(now), -(months - 1))
    starts = [add_months(first, i) for i in range(months)]
    counts: dict[date, dict[str, int]] = {s.date(): {} for s in starts}
    for row in (
        Event.objects.filter(
            name__in=[STARTED, RENEWED, CANCELED, PAYMENT_FAILED],
            occurred_at__gte=first,
            occurred_at__lt=now,
        )
        .annotate(month=TruncMonth("occurred_at", tzinfo=UTC))
        .values("month", "name")
        .annotate(n=Count("id"))
    ):
        counts.setdefault(as_date(row["month"]), {})[row["name"]] = row["n"]
    boundaries = [*starts[1:], now]
    at = {s: subscribers_at(s) for s in [starts[0], *boundaries]}
    rows = []
    for s, e in zip(starts, boundaries, strict=True):
        c = counts.get(s.date(), {})
        rows.append(
            MonthRow(
                month=s.date(),
                active_at_start=at[s][0],
                started=c.get(STARTED, 0),
                renewed=c.get(RENEWED, 0),
                payment_failed=c.get(PAYMENT_FAILED, 0),
                canceled=c.get(CANCELED, 0),
                active_at_end=at[e][0],
                mrr_at_end=at[e][1],
            )
        )
    return rows


@dataclass
class Cohorts:
    months: list[date]  # cohort months, oldest first
    sizes: dict[date, int]
    # (cohort month, months since signup) -> customers active in that month
    active: dict[tuple[date, int], int] = field(default_factory=dict)

    def rate(self, cohort: date, offset: int) -> float | None:
        return percent(self.active.get((cohort, offset), 0), self.sizes.get(cohort, 0))

    @property
    def max_offset(self) -> int:
        return len(self.months) - 1


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def cohort_retention(*, now: datetime, months: int = 6) -> Cohorts:
    """Customers by the month of their first `signed_up` (the cohort), and
    for each later month the share of them who recorded an event of their
    own (not one about our messages or surveys) in it. Two grouped queries;
    the signup time comes from EventStat's `first_at`."""
    if not 1 <= months <= 24:
        raise ValueError(f"months: must be between 1 and 24, got {months}")
    first = add_months(month_start(now), -(months - 1))
    signups = EventStat.objects.filter(
        _KNOWN, name=SIGNED_UP, first_at__gte=first, first_at__lt=now
    )
    sizes = {
        as_date(row["month"]): row["n"]
        for row in signups.annotate(month=TruncMonth("first_at", tzinfo=UTC))
        .values("month")
        .annotate(n=Count("id"))
    }
    own = Event.objects.filter(_KNOWN, occurred_at__gte=first, occurred_at__lt=now)
    for prefix in DERIVED_PREFIXES:
        own = own.exclude(name__startswith=prefix)
    own = own.exclude(name__in=DERIVED_NAMES)
    # A join on the customer's signed_up EventStat (unique per customer),
    # not a subquery per event row.
    rows = (
        own.filter(
            customer__event_stats__name=SIGNED_UP,
            customer__event_stats__first_at__gte=first,
            customer__event_stats__first_at__lt=now,
        )
        .annotate(
            cohort=TruncMonth("customer__event_stats__first_at", tzinfo=UTC),
            month=TruncMonth("occurred_at", tzinfo=UTC),
        )
        .values("cohort", "month")
        .annotate(n=Count("customer", distinct=True))
    )
    active = {}
    for row in rows:
        cohort, month = as_date(row["cohort"]), as_date(row["month"])
        offset = _month_index(month) - _month_index(cohort)
        if offset >= 0:
            active[(cohort, offset)] = row["n"]
    return Cohorts(
        months=[add_months(first, i).date() for i in range(months)], sizes=sizes, active=active
    )
