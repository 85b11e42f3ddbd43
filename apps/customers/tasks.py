from celery import shared_task
from django.utils import timezone

from .services import anonymous_profiles_expire


@shared_task
def expire_anonymous() -> int:
    """Scheduled by beat: anonymous visitors past their time to live."""
    return anonymous_profiles_expire(now=timezone.now())
