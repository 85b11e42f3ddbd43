"""Thin Celery tasks for delivery: ids in, one service call. Routed to the
`delivery` queue (config/celery.py); the sweeper runs on beat."""

from celery import shared_task
from celery.signals import worker_init
from django.utils import timezone

from .delivery import messages_deliver, messages_sweep
from .providers import import_configured


@shared_task
def deliver_messages(message_ids: list[int]) -> None:
    """Published on commit by `delivery_enqueue` (and by the sweeper). Safe to
    run twice: each message is claimed by a compare-and-set, so a redelivered
    task calls no provider again."""
    messages_deliver(message_ids, now=timezone.now())


@shared_task
def sweep_deliveries() -> None:
    """Beat, every DELIVERY_SWEEP_INTERVAL_S: expire leases, publish what is due."""
    messages_sweep(now=timezone.now())


@worker_init.connect
def _import_providers(**_) -> None:
    """In the worker's main process, before its pool forks (see
    providers.import_configured)."""
    import_configured()
