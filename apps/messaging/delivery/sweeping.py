"""The sweeper, on beat every few seconds: leases that ran out become
`unknown`, and what is due but unpublished (or published long ago, or lost
with the broker's data) is published (see the package's docstring)."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from apps.core.broker import broker_lost_data

from ..models import Message
from ..transitions import PENDING, leases_expire
from .publishing import _stamp_published, publish

logger = logging.getLogger(__name__)

S = Message.Status
# How many messages one sweep publishes at most (the rest: the next sweep).
SWEEP_PUBLISH_LIMIT_BATCHES = 100
# The sweeper's name for the broker's epoch (apps.core.broker).
BROKER_EPOCH_NAME = "delivery"
LEASE_EXPIRED = (
    "the worker sending it stopped before recording the provider's answer (lease expired): "
    "it may or may not have been sent"
)


def _due(now: datetime) -> Q:
    return Q(send_after__isnull=True) | Q(send_after__lte=now)


@dataclass
class SweepReport:
    expired: int = 0  # sending past its lease → unknown
    published: int = 0


def messages_sweep(*, now: datetime) -> SweepReport:
    """Expire stale leases and publish what is due and unpublished (see the
    package's docstring). Overlapping sweeps are harmless: a message published
    twice is claimed once."""
    expired = leases_expire(now=now, error=LEASE_EXPIRED)
    if expired:
        logger.warning("delivery: %d message(s) past their lease marked unknown", expired)

    if broker_lost_data(BROKER_EPOCH_NAME, now=now):
        # Every task published before the loss went with it: the messages
        # still waiting are unpublished now, and go out at once instead of
        # after DELIVERY_REPUBLISH_AFTER_S (within the limit below per sweep;
        # the next sweeps take the rest, as for any unpublished message).
        waiting = Message.objects.filter(status__in=PENDING, published_at__isnull=False)
        if lost := _stamp_published(waiting, None):
            logger.warning("delivery: the broker lost its data; republishing %d message(s)", lost)
    stale = now - timedelta(seconds=settings.DELIVERY_REPUBLISH_AFTER_S)
    limit = settings.DELIVERY_BATCH_SIZE * SWEEP_PUBLISH_LIMIT_BATCHES
    ids = list(
        Message.objects.filter(status__in=PENDING)
        .filter(_due(now))
        .filter(Q(published_at__isnull=True) | Q(published_at__lt=stale))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return SweepReport(expired=expired, published=publish(ids, now=now) if ids else 0)
