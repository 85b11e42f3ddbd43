"""Thin tasks. Beat publishes `refresh_segments` every minute; it publishes
one `refresh_segment` per active dynamic segment, so the worker's processes
refresh segments side by side (a full refresh of a big segment takes seconds:
one after the other, the last would wait for all the others)."""

from datetime import datetime

from celery import shared_task
from django.utils import timezone

from .services import segment_refresh_by_id, segments_refresh_publish

# A segment's refresh still queued when the next minute's is published is
# dropped, not piled up: the next one does its work.
REFRESH_TASK_EXPIRES_S = 60


@shared_task
def refresh_segments(now: str | None = None) -> None:
    """Publish one `refresh_segment` per active dynamic segment. Overlapping
    runs are safe: each segment is refreshed under its own lease, so a second
    refresh of a busy segment skips. Each refresh runs as of the time it
    starts, or as of `now` (ISO 8601 with an offset) when given."""
    segments_refresh_publish(
        now=_as_of(now),
        publish=lambda pk: refresh_segment.apply_async((pk, now), expires=REFRESH_TASK_EXPIRES_S),
    )


@shared_task
def refresh_segment(segment_id: int, now: str | None = None) -> None:
    """Refresh one segment (a no-op if it is no longer an active dynamic one)."""
    segment_refresh_by_id(segment_id, now=_as_of(now))


def _as_of(now: str | None) -> datetime:
    if now is None:
        return timezone.now()
    at = datetime.fromisoformat(now)
    if at.tzinfo is None:
        raise ValueError(f"now must be an ISO 8601 time with an offset, got {now!r}")
    return at
