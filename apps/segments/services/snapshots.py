"""A segment's size once a day, for its growth chart."""

from datetime import UTC, date, datetime

from ..models import SegmentSnapshot


def snapshot_sizes(sizes: dict[int, int], *, now: datetime) -> None:
    """Upsert today's (UTC) size of each segment. Taken at every refresh and
    upload rather than by a daily task: the chart's last point is live, a day's
    row ends as that day's closing size, and no day is lost because beat was
    down at one particular minute."""
    if not sizes:
        return
    day = _utc_day(now)
    SegmentSnapshot.objects.bulk_create(
        [SegmentSnapshot(segment_id=pk, day=day, member_count=n) for pk, n in sizes.items()],
        update_conflicts=True,
        unique_fields=["segment", "day"],
        update_fields=["member_count"],
    )


def _utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()
