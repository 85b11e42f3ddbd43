from celery import shared_task
from django.utils import timezone

from .health import heartbeat_record


@shared_task
def heartbeat() -> None:
    """Scheduled by beat; proves a worker is consuming the default queue."""
    heartbeat_record(now=timezone.now())
