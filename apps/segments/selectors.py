"""Reads of segments: members, a customer's history, the size chart."""

from datetime import UTC, date, datetime, timedelta

from django.db.models import QuerySet

from apps.customers.models import Customer

from .models import Segment, SegmentMembership


def segment_members(segment: Segment) -> QuerySet[Customer]:
    """The customers in the segment now (open memberships). At most one open
    membership per customer and segment, so the join repeats no one. Known
    customers only: a profile merged since the last refresh is already gone."""
    return Customer.objects.known().filter(
        segment_memberships__segment=segment, segment_memberships__exited_at__isnull=True
    )


def customer_segment_history(customer: Customer) -> QuerySet[SegmentMembership]:
    """Every stay of the customer in a segment, open or closed, newest first."""
    return (
        SegmentMembership.objects.filter(SegmentMembership.of_customer(customer.pk))
        .select_related("segment")
        .order_by("-entered_at", "-id")
    )


def segment_size_series(
    segment: Segment, days: int = 90, *, today: date | None = None
) -> list[tuple[date, int]]:
    """(day, members) for each day of the last `days` (UTC, up to `today`) that
    has a snapshot, oldest first. A missing day is one on which no refresh ran:
    it is left out rather than guessed."""
    today = today or datetime.now(UTC).date()
    return list(
        segment.snapshots.filter(day__gt=today - timedelta(days=days), day__lte=today)
        .order_by("day")
        .values_list("day", "member_count")
    )
