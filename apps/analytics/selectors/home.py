"""The marketer's home page: what is live, what was sent today, NPS, and
what needs attention."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.apps import apps
from django.conf import settings
from django.db.models import Count, Q

from apps.journeys.models import Enrollment, Journey
from apps.messaging.models import Message

from .deliverability import deliverability, sent_messages


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
