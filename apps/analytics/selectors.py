"""The dashboards' numbers: journeys, deliverability, retention, NPS and the
marketer's home page. Reads only, from every app; nothing here writes.

Every number is an aggregate computed by the database (COUNT/SUM with
filters, grouped by a truncated date or a column), the same SQL on
PostgreSQL and SQLite; Python only arranges the rows. Time is a parameter:
windows are half-open [start, end) in UTC and "now" is passed in, so a
dashboard and its tests see the same clock. docs/analytics.md says how each
number is computed.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import (
    Case,
    Count,
    Exists,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate, TruncMonth

from apps.customers.models import Event, EventStat
from apps.journeys.models import Enrollment, EnrollmentStep, Journey
from apps.messaging.models import Message, Suppression
from apps.tracking.models import Engagement

MAX_DAYS = 366

# --- helpers -----------------------------------------------------------------------------


def percent(part: int | float, whole: int | float) -> float | None:
    """part / whole as a percentage with one decimal; None when whole is 0."""
    if not whole:
        return None
    return round(100 * part / whole, 1)


def check_window(start: datetime, end: datetime) -> None:
    """Refuse a window the dashboards cannot draw, naming the problem."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes (UTC)")
    if end <= start:
        raise ValueError(f"end ({end:%Y-%m-%d}) must be after start ({start:%Y-%m-%d})")
    if end - start > timedelta(days=MAX_DAYS):
        raise ValueError(f"the window is longer than {MAX_DAYS} days")


def _as_date(value) -> date:
    # PostgreSQL gives a date or an aware datetime; SQLite may give either or a string.
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def days_between(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC)
    return [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1)


# --- journey report ----------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelRow:
    node_id: str
    kind: str
    reached: int  # enrollments that reached the node (any visit)
    share: float | None  # of those enrolled, %


@dataclass(frozen=True)
class GroupConversion:
    enrolled: int
    converted: int

    @property
    def rate(self) -> float | None:
        return percent(self.converted, self.enrolled)


@dataclass(frozen=True)
class DayRow:
    day: date
    enrolled: int
    converted: int
    messages: int


@dataclass
class JourneyReport:
    journey: Journey
    start: datetime
    end: datetime
    treated: GroupConversion
    holdout: GroupConversion
    by_state: dict[str, int]
    funnel: list[FunnelRow]
    messages_by_status: list[tuple[str, int]]
    daily: list[DayRow]

    @property
    def enrolled(self) -> int:
        return self.treated.enrolled + self.holdout.enrolled

    @property
    def conversion_rate(self) -> float | None:
        return percent(self.treated.converted + self.holdout.converted, self.enrolled)

    @property
    def lift(self) -> float | None:
        """Treated conversion minus held-out conversion, in percentage points."""
        if self.treated.rate is None or self.holdout.rate is None:
            return None
        return round(self.treated.rate - self.holdout.rate, 1)


def _node_order(journey: Journey) -> dict[str, tuple[int, str]]:
    """Node id -> (position, kind) in the live version's definition (else the draft)."""
    definition = journey.live_version.definition if journey.live_version_id else journey.draft
    nodes = (definition or {}).get("nodes") or []
    return {n.get("id"): (i, n.get("type", "")) for i, n in enumerate(nodes) if isinstance(n, dict)}


def journey_report(*, journey: Journey, start: datetime, end: datetime) -> JourneyReport:
    """The enrollments that entered `journey` in [start, end): how far they
    got (the funnel: distinct enrollments with a step at each node), how many
    met the goal (treated and held out apart, and the lift), the messages the
    journey made in the window by status, and a count per day."""
    check_window(start, end)
    enrollments = Enrollment.objects.filter(
        journey=journey, entered_at__gte=start, entered_at__lt=end
    )
    groups = {False: GroupConversion(0, 0), True: GroupConversion(0, 0)}
    for row in enrollments.values("is_holdout").annotate(
        n=Count("id"), converted=Count("id", filter=Q(state=Enrollment.State.CONVERTED))
    ):
        groups[row["is_holdout"]] = GroupConversion(row["n"], row["converted"])
    by_state = dict(enrollments.values("state").annotate(n=Count("id")).values_list("state", "n"))
    enrolled = groups[False].enrolled + groups[True].enrolled

    order = _node_order(journey)
    reached = (
        EnrollmentStep.objects.filter(enrollment__in=enrollments.values("id"))
        .values("node_id")
        .annotate(n=Count("enrollment", distinct=True))
    )
    funnel = [
        FunnelRow(
            row["node_id"],
            order.get(row["node_id"], (0, "(removed)"))[1],
            row["n"],
            percent(row["n"], enrolled),
        )
        for row in reached
    ]
    funnel.sort(key=lambda r: (order.get(r.node_id, (10**6,))[0], -r.reached, r.node_id))

    messages = Message.objects.filter(
        journey=journey.slug, is_test=False, created_at__gte=start, created_at__lt=end
    )
    by_status = sorted(
        messages.values("status").annotate(n=Count("id")).values_list("status", "n"),
        key=lambda kv: (-kv[1], kv[0]),
    )

    daily: dict[date, dict[str, int]] = {d: {} for d in days_between(start, end)}
    for row in (
        enrollments.annotate(day=TruncDate("entered_at", tzinfo=UTC))
        .values("day")
        .annotate(n=Count("id"))
    ):
        daily.setdefault(_as_date(row["day"]), {})["enrolled"] = row["n"]
    converted = Enrollment.objects.filter(
        journey=journey,
        state=Enrollment.State.CONVERTED,
        finished_at__gte=start,
        finished_at__lt=end,
    )
    for row in (
        converted.annotate(day=TruncDate("finished_at", tzinfo=UTC))
        .values("day")
        .annotate(n=Count("id"))
    ):
        daily.setdefault(_as_date(row["day"]), {})["converted"] = row["n"]
    for row in (
        Message.objects.filter(
            journey=journey.slug, is_test=False, sent_at__gte=start, sent_at__lt=end
        )
        .annotate(day=TruncDate("sent_at", tzinfo=UTC))
        .values("day")
        .annotate(n=Count("id"))
    ):
        daily.setdefault(_as_date(row["day"]), {})["messages"] = row["n"]
    days = [
        DayRow(d, v.get("enrolled", 0), v.get("converted", 0), v.get("messages", 0))
        for d, v in sorted(daily.items())
    ]
    return JourneyReport(
        journey=journey,
        start=start,
        end=end,
        treated=groups[False],
        holdout=groups[True],
        by_state=by_state,
        funnel=funnel,
        messages_by_status=by_status,
        daily=days,
    )


# --- deliverability ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeliverabilityRow:
    channel: str
    template: str  # slug; "" in the per-channel rows or for a deleted template
    sent: int
    delivered: int
    bounced: int
    complained: int
    unsubscribed: int
    opened: int  # by a person
    clicked: int  # by a person
    machine_opened: int
    machine_clicked: int

    @property
    def delivery_rate(self) -> float | None:
        return percent(self.delivered, self.sent)

    @property
    def bounce_rate(self) -> float | None:
        return percent(self.bounced, self.sent)

    @property
    def complaint_rate(self) -> float | None:
        return percent(self.complained, self.sent)

    @property
    def unsubscribe_rate(self) -> float | None:
        return percent(self.unsubscribed, self.sent)

    @property
    def open_rate(self) -> float | None:
        return percent(self.opened, self.delivered)

    @property
    def click_rate(self) -> float | None:
        return percent(self.clicked, self.delivered)


def _engaged(kinds: list[str], *, machine: bool | None = None) -> Exists:
    qs = Engagement.objects.filter(message=OuterRef("pk"), kind__in=kinds)
    if machine is not None:
        qs = qs.filter(machine=machine)
    return Exists(qs)


def sent_messages(*, start: datetime, end: datetime) -> QuerySet[Message]:
    """Messages handed to a provider in [start, end) (test sends left out)."""
    return Message.objects.filter(is_test=False, sent_at__gte=start, sent_at__lt=end)


def _deliverability_counts() -> dict:
    S, K = Message.Status, Engagement.Kind
    window = timedelta(days=settings.ANALYTICS_UNSUBSCRIBE_WINDOW_DAYS)
    unsubscribed_after = Suppression.objects.filter(
        reason=Suppression.Reason.UNSUBSCRIBE,
        channel=OuterRef("channel"),
        address=OuterRef("to_address"),
        created_at__gte=OuterRef("sent_at"),
        created_at__lt=OuterRef("sent_at") + Value(window),
    )
    flags = {
        "delivered": Q(delivered_at__isnull=False)
        | Q(status__in=[S.DELIVERED, S.OPENED, S.CLICKED, S.COMPLAINED]),
        "bounced": Q(status=S.BOUNCED) | Q(_engaged([K.BOUNCE, K.DROPPED])),
        "complained": Q(status=S.COMPLAINED) | Q(_engaged([K.COMPLAINT])),
        "unsubscribed": Q(_engaged([K.UNSUBSCRIBE])) | Q(Exists(unsubscribed_after)),
        "opened": Q(_engaged([K.OPEN], machine=False)),
        "clicked": Q(_engaged([K.CLICK], machine=False)),
        "machine_opened": Q(_engaged([K.OPEN], machine=True)),
        "machine_clicked": Q(_engaged([K.CLICK], machine=True)),
    }
    counts = {"sent": Count("id")}
    counts.update({name: Count("id", filter=flag) for name, flag in flags.items()})
    return counts


def deliverability(
    *, start: datetime, end: datetime
) -> tuple[list[DeliverabilityRow], list[DeliverabilityRow]]:
    """Per channel and per (channel, template): what happened to the
    messages sent in the window. Two grouped queries."""
    check_window(start, end)
    qs = sent_messages(start=start, end=end)
    counts = _deliverability_counts()
    by_channel = [
        DeliverabilityRow(template="", **row)
        for row in qs.values("channel").annotate(**counts).order_by("channel")
    ]
    by_template = [
        DeliverabilityRow(template=row.pop("template__slug") or "", **row)
        for row in qs.values("channel", "template__slug")
        .annotate(**counts)
        .order_by("channel", "template__slug")
    ]
    return by_channel, by_template


# --- retention ---------------------------------------------------------------------------

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
    return Event.objects.filter(name=STARTED, occurred_at__lt=at, pk=Subquery(latest)).exclude(
        Exists(canceled)
    )


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
        counts.setdefault(_as_date(row["month"]), {})[row["name"]] = row["n"]
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
    signups = EventStat.objects.filter(name=SIGNED_UP, first_at__gte=first, first_at__lt=now)
    sizes = {
        _as_date(row["month"]): row["n"]
        for row in signups.annotate(month=TruncMonth("first_at", tzinfo=UTC))
        .values("month")
        .annotate(n=Count("id"))
    }
    own = Event.objects.filter(occurred_at__gte=first, occurred_at__lt=now)
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
        cohort, month = _as_date(row["cohort"]), _as_date(row["month"])
        offset = _month_index(month) - _month_index(cohort)
        if offset >= 0:
            active[(cohort, offset)] = row["n"]
    return Cohorts(
        months=[add_months(first, i).date() for i in range(months)], sizes=sizes, active=active
    )


# --- NPS ---------------------------------------------------------------------------------


def nps_distribution(*, start: datetime, end: datetime, **filters) -> list[tuple[int, int]]:
    """(score, responses) for every score 0..10, zeros included."""
    from apps.surveys import selectors as surveys

    counts = dict(
        surveys.responses(start=start, end=end, **filters)
        .values("score")
        .annotate(n=Count("id"))
        .values_list("score", "n")
    )
    return [(score, counts.get(score, 0)) for score in range(11)]


def nps_comments(*, start: datetime, end: datetime, limit: int = 50, **filters) -> list:
    """Responses with a comment: detractors first, then passives, then
    promoters, the latest first within each."""
    from apps.surveys import selectors as surveys
    from apps.surveys.models import Category

    rank = Case(
        When(category=Category.DETRACTOR, then=Value(0)),
        When(category=Category.PASSIVE, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    qs = surveys.responses(start=start, end=end, **filters).exclude(comment="")
    return list(
        qs.annotate(rank=rank)
        .select_related("customer", "survey", "invitation")
        .order_by("rank", "-responded_at", "-pk")[:limit]
    )


# --- the marketer's home page ------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    level: str  # "error" | "warning"
    text: str
    link: str = ""


@dataclass
class Home:
    live_journeys: list[dict]
    sent_today: dict[str, int]
    nps: object  # apps.surveys.selectors.NpsSummary, or None without the app's data
    alerts: list[Alert]


def home(*, now: datetime) -> Home:
    """What is live (with active enrollments), what was sent today (UTC),
    NPS over the last 90 days, and what needs attention: journeys whose
    enrollments failed in the last day, a channel whose bounce or complaint
    rate over the alert window is above its threshold, messages whose
    delivery ended unknown."""
    live = list(
        Journey.objects.filter(status=Journey.Status.LIVE)
        .annotate(active=Count("enrollments", filter=Q(enrollments__state=Enrollment.State.ACTIVE)))
        .order_by("name")
        .values("slug", "name", "active")
    )
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sent_today = dict(
        sent_messages(start=today, end=now)
        .values("channel")
        .annotate(n=Count("id"))
        .values_list("channel", "n")
    )
    nps = None
    if apps.is_installed("apps.surveys"):
        from apps.surveys import selectors as surveys

        nps = surveys.nps_summary(start=now - timedelta(days=90), end=now)

    alerts: list[Alert] = []
    failing = (
        Enrollment.objects.filter(
            state=Enrollment.State.FAILED, finished_at__gte=now - timedelta(days=1)
        )
        .values("journey__slug", "journey__name")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    for row in failing:
        alerts.append(
            Alert(
                "error",
                f"Journey {row['journey__name']}: {row['n']} enrollment"
                f"{'s' if row['n'] != 1 else ''} failed in the last 24 hours.",
                row["journey__slug"],
            )
        )
    days = settings.ANALYTICS_ALERT_WINDOW_DAYS
    by_channel, _ = deliverability(start=now - timedelta(days=days), end=now)
    for row in by_channel:
        if row.sent < settings.ANALYTICS_ALERT_MIN_SENT:
            continue
        for label, rate, limit in (
            ("bounce", row.bounce_rate, settings.ANALYTICS_BOUNCE_RATE_ALERT),
            ("complaint", row.complaint_rate, settings.ANALYTICS_COMPLAINT_RATE_ALERT),
        ):
            if rate is not None and rate > limit:
                alerts.append(
                    Alert(
                        "warning",
                        f"{row.channel} {label} rate {rate}% over the last {days} days "
                        f"({row.sent:,} sent) is above {limit}%.",
                    )
                )
    unknown = Message.objects.filter(status=Message.Status.UNKNOWN).count()
    if unknown:
        alerts.append(
            Alert(
                "warning",
                f"{unknown:,} message{'s' if unknown != 1 else ''} in state unknown "
                "(a send whose outcome was lost) need review.",
            )
        )
    return Home(live_journeys=live, sent_today=sent_today, nps=nps, alerts=alerts)
