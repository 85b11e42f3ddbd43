"""Reads for tracking: what analytics and the admin ask of engagement. Human
and machine engagement are always counted apart."""

from collections import defaultdict
from datetime import datetime

from django.db.models import Count, QuerySet

from .models import Engagement, InboundSms, ProviderEvent


def engagement_counts(
    *,
    journey: str | None = None,
    message_ids=None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, dict[str, int]]:
    """{kind: {"human": n, "machine": n}} over the engagements that occurred
    in [since, until), optionally of one journey's messages or of given
    messages (ids or a queryset of ids). Counts rows: an email opened three
    times is three opens (distinct messages: `engaged_messages`)."""
    rows = _engagements(journey=journey, message_ids=message_ids, since=since, until=until)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"human": 0, "machine": 0})
    for kind, machine, n in rows.values_list("kind", "machine").annotate(n=Count("id")):
        counts[kind]["machine" if machine else "human"] += n
    return dict(counts)


def engaged_messages(
    kind: str,
    *,
    journey: str | None = None,
    message_ids=None,
    since: datetime | None = None,
    until: datetime | None = None,
    machine: bool = False,
) -> int:
    """How many distinct messages had at least one `kind` engagement (human
    by default): unique opens, unique clicks."""
    rows = _engagements(journey=journey, message_ids=message_ids, since=since, until=until)
    return rows.filter(kind=kind, machine=machine).values("message_id").distinct().count()


def _engagements(*, journey, message_ids, since, until) -> QuerySet:
    rows = Engagement.objects.filter(processed_at__isnull=False)
    if journey is not None:
        rows = rows.filter(message__journey=journey)
    if message_ids is not None:
        rows = rows.filter(message_id__in=message_ids)
    if since is not None:
        rows = rows.filter(occurred_at__gte=since)
    if until is not None:
        rows = rows.filter(occurred_at__lt=until)
    return rows.order_by()


def message_engagements(message_id: int) -> QuerySet:
    """A message's engagements, newest first (for its admin page)."""
    return Engagement.objects.filter(message_id=message_id).order_by("-occurred_at", "-id")


def unmatched_events() -> QuerySet:
    """Provider events processed without a message of ours."""
    return ProviderEvent.objects.filter(
        message__isnull=True, processed_at__isnull=False, error=""
    ).order_by("-id")


def inbound_to_review() -> QuerySet:
    """Free-text SMS that read like a request to stop, not yet reviewed."""
    return InboundSms.objects.filter(needs_review=True, reviewed_at__isnull=True).order_by(
        "received_at"
    )
