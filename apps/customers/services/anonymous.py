"""Anonymous visitors past their time to live: deleted with their events.

A visitor who never identifies within `ANONYMOUS_PROFILE_TTL_DAYS` of last
being seen is of no use to lifecycle messaging (they cannot be messaged) and
is personal data kept for nothing. Merged and promoted profiles are not
anonymous any more and are kept.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from apps.core.bulk import SQL_CHUNK

from ..models import Customer


def anonymous_profiles_expire(*, now: datetime, chunk: int = SQL_CHUNK) -> int:
    """Delete the anonymous profiles not seen for the time to live, with
    their events, in chunks of `chunk` (each its own transaction). Returns
    how many were deleted."""
    cutoff = now - timedelta(days=settings.ANONYMOUS_PROFILE_TTL_DAYS)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Customer.objects.anonymous()
                .filter(last_seen_at__lt=cutoff)
                .order_by("last_seen_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:chunk]
            )
            if not ids:
                return deleted
            Customer.objects.filter(pk__in=ids).delete()
            deleted += len(ids)
