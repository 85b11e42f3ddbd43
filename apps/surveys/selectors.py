"""Reads for NPS: the score and its parts by period, segment and journey, the
response rate, and what detractors wrote.

NPS = % promoters (9-10) - % detractors (0-6) of the responses, from -100 to
100. Responses are counted by when they were first given (`responded_at`)
with their current score; the response rate is of the invitations that went
out in the same slice (`sent_at`), those answered over those sent, whenever
the answer came. Slices are half-open [start, end), in UTC.

Filters combine: `survey` (slug), `journey` (the slug that sent the
invitation; "" for none), `segment` (slug: the customers who are in it now).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncMonth, TruncWeek

from .models import Category, SurveyInvitation, SurveyResponse

PERIODS = {"week": TruncWeek, "month": TruncMonth}


@dataclass(frozen=True)
class NpsSummary:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    sent: int = 0  # invitations that went out
    answered: int = 0  # of those, answered

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> float | None:
        """NPS, rounded to one decimal; None without responses."""
        if not self.responses:
            return None
        return round(100 * (self.promoters - self.detractors) / self.responses, 1)

    @property
    def response_rate(self) -> float | None:
        """Answered over sent, as a percentage (one decimal); None when none went out."""
        if not self.sent:
            return None
        return round(100 * self.answered / self.sent, 1)


@dataclass(frozen=True)
class NpsRow:
    key: str  # the period's first day (ISO date), the journey or the segment
    summary: NpsSummary


def _filtered(
    qs: QuerySet,
    *,
    survey: str | None,
    journey: str | None,
    segment: str | None,
    journey_field: str,
) -> QuerySet:
    if survey is not None:
        qs = qs.filter(survey__slug=survey)
    if journey is not None:
        qs = qs.filter(**{journey_field: journey})
    if segment is not None:
        from apps.segments.models import SegmentMembership

        members = SegmentMembership.objects.filter(
            segment__slug=segment, exited_at__isnull=True
        ).values("customer_id")
        qs = qs.filter(customer_id__in=members)
    return qs


def responses(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
) -> QuerySet[SurveyResponse]:
    qs = SurveyResponse.objects.all()
    if start is not None:
        qs = qs.filter(responded_at__gte=start)
    if end is not None:
        qs = qs.filter(responded_at__lt=end)
    return _filtered(
        qs, survey=survey, journey=journey, segment=segment, journey_field="invitation__journey"
    )


def invitations_sent(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
) -> QuerySet[SurveyInvitation]:
    qs = SurveyInvitation.objects.filter(sent_at__isnull=False)
    if start is not None:
        qs = qs.filter(sent_at__gte=start)
    if end is not None:
        qs = qs.filter(sent_at__lt=end)
    return _filtered(qs, survey=survey, journey=journey, segment=segment, journey_field="journey")


_CATEGORY_COUNTS = {
    "promoters": Count("id", filter=Q(category=Category.PROMOTER)),
    "passives": Count("id", filter=Q(category=Category.PASSIVE)),
    "detractors": Count("id", filter=Q(category=Category.DETRACTOR)),
}
_SENT_COUNTS = {
    "sent": Count("id"),
    "answered": Count("id", filter=Q(responded_at__isnull=False)),
}


def nps_summary(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
) -> NpsSummary:
    """The counts, NPS and response rate over one slice (two queries)."""
    where = {"start": start, "end": end, "survey": survey, "journey": journey, "segment": segment}
    counts = responses(**where).aggregate(**_CATEGORY_COUNTS)
    sent = invitations_sent(**where).aggregate(**_SENT_COUNTS)
    return NpsSummary(**counts, **sent)


def period_starts(period: str, start: datetime, end: datetime) -> list[datetime]:
    """The first moment of each week (Monday) or month touching [start, end), UTC."""
    if period not in PERIODS:
        raise ValueError(f"period: must be 'week' or 'month', got {period!r}")
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    else:
        day = day.replace(day=1)
    starts = []
    while day < end:
        starts.append(day)
        if period == "week":
            day += timedelta(days=7)
        else:
            day = (day + timedelta(days=32)).replace(day=1)
    return starts


def nps_by_period(
    *,
    period: str,
    start: datetime,
    end: datetime,
    survey: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
) -> list[NpsRow]:
    """One row per week or month from `start` to `end` (empty ones included,
    for a chart), keyed by the period's first day. Two grouped queries."""
    starts = period_starts(period, start, end)
    trunc = PERIODS[period]
    where = {"start": start, "end": end, "survey": survey, "journey": journey, "segment": segment}
    by_period: dict[str, dict[str, int]] = {s.date().isoformat(): {} for s in starts}
    answered = (
        responses(**where)
        .annotate(period=trunc("responded_at", tzinfo=UTC))
        .values("period")
        .annotate(**_CATEGORY_COUNTS)
    )
    sent = (
        invitations_sent(**where)
        .annotate(period=trunc("sent_at", tzinfo=UTC))
        .values("period")
        .annotate(**_SENT_COUNTS)
    )
    for row in [*answered, *sent]:
        key = row.pop("period").astimezone(UTC).date().isoformat()  # an aware datetime
        by_period.setdefault(key, {}).update(row)
    return [NpsRow(key, NpsSummary(**counts)) for key, counts in sorted(by_period.items())]


def nps_by_journey(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    segment: str | None = None,
) -> list[NpsRow]:
    """One row per journey that sent invitations or got answers in the slice
    ("" for invitations not sent by a journey), the best NPS first."""
    where = {"start": start, "end": end, "survey": survey, "segment": segment}
    by_journey: dict[str, dict[str, int]] = {}
    answered = responses(**where).values("invitation__journey").annotate(**_CATEGORY_COUNTS)
    for row in answered:
        by_journey.setdefault(row.pop("invitation__journey"), {}).update(row)
    for row in invitations_sent(**where).values("journey").annotate(**_SENT_COUNTS):
        by_journey.setdefault(row.pop("journey"), {}).update(row)
    rows = [NpsRow(key, NpsSummary(**counts)) for key, counts in by_journey.items()]
    return sorted(rows, key=lambda r: (r.summary.score is None, -(r.summary.score or 0), r.key))


def nps_by_segment(
    segments: Iterable[str],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    journey: str | None = None,
) -> list[NpsRow]:
    """One row per segment (slug), in the order given: the answers of its
    current members. Two queries per segment."""
    return [
        NpsRow(
            slug,
            nps_summary(start=start, end=end, survey=survey, journey=journey, segment=slug),
        )
        for slug in segments
    ]


def detractor_comments(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    survey: str | None = None,
    journey: str | None = None,
    segment: str | None = None,
    limit: int = 50,
) -> list[SurveyResponse]:
    """Detractors' responses with a comment, the latest change first, with
    the customer and the invitation loaded (for a list to read and act on)."""
    qs = responses(start=start, end=end, survey=survey, journey=journey, segment=segment)
    qs = qs.filter(category=Category.DETRACTOR).exclude(comment="")
    return list(
        qs.select_related("customer", "invitation", "survey").order_by("-updated_at", "-pk")[:limit]
    )
