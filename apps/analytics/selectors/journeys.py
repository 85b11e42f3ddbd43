"""The journey report: how far a journey's enrollments got (the funnel), how
many met the goal (treated and held out apart, and the lift), its messages by
status, and a count per day."""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from apps.journeys.models import Enrollment, EnrollmentStep, Journey
from apps.messaging.models import Message

from .windows import as_date, check_window, days_between, percent


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
        daily.setdefault(as_date(row["day"]), {})["enrolled"] = row["n"]
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
        daily.setdefault(as_date(row["day"]), {})["converted"] = row["n"]
    for row in (
        Message.objects.filter(
            journey=journey.slug, is_test=False, sent_at__gte=start, sent_at__lt=end
        )
        .annotate(day=TruncDate("sent_at", tzinfo=UTC))
        .values("day")
        .annotate(n=Count("id"))
    ):
        daily.setdefault(as_date(row["day"]), {})["messages"] = row["n"]
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
