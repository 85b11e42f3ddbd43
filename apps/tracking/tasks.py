from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .services.processing import tracking_process


@shared_task
def process_tracking() -> None:
    """On beat every few seconds, and published after each webhook: process
    the pending provider events and pixel/redirect hits in batches.
    Overlapping runs are safe (batches are claimed, SKIP LOCKED)."""
    # A quarter of the soft time limit, then the next run goes on.
    tracking_process(now=timezone.now(), budget_s=settings.CELERY_TASK_SOFT_TIME_LIMIT / 4)
