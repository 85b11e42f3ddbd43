from celery import shared_task
from django.utils import timezone

from .services import segments_refresh_all


@shared_task
def refresh_segments() -> None:
    """Scheduled by beat every minute. Overlapping runs are safe: each segment
    is refreshed under its own lease, so a second run skips the busy ones."""
    segments_refresh_all(now=timezone.now())
