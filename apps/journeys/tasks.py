"""Thin tasks: each takes ids (or nothing) and calls one service with the time
it runs at. Scheduled by beat (config/celery.py `system_schedule`): the tick
every ENGINE_TICK_INTERVAL_S, the date-trait and schedule checks every
JOURNEY_TRIGGER_CHECK_INTERVAL_S, the ingest work sweeper every
JOURNEY_INGEST_SWEEP_INTERVAL_S."""

from celery import shared_task
from django.utils import timezone

from .engine import engine_tick, enrollments_advance
from .ingest_work import ingest_work_process, ingest_work_sweep
from .triggers import date_triggers_check, events_received, schedule_triggers_check


@shared_task
def tick() -> None:
    """Claim due enrollments and publish `advance_enrollments` for them.
    Overlapping ticks are safe: claims are disjoint (SKIP LOCKED, leases)."""
    engine_tick(now=timezone.now())


@shared_task
def advance_enrollments(enrollment_ids: list[int]) -> None:
    """Advance a chunk of claimed enrollments. Running it twice is safe: an
    enrollment already moved on is no longer due."""
    enrollments_advance(enrollment_ids, now=timezone.now())


@shared_task
def process_ingested(work_ids: list[int]) -> None:
    """Published when an API ingest call commits (and by the sweeper): each
    `IngestWork` row's journeys work, once however often it runs."""
    ingest_work_process(work_ids, now=timezone.now())


@shared_task
def sweep_ingested() -> None:
    """Publish the ingest work rows whose publication or task was lost."""
    ingest_work_sweep(now=timezone.now())


@shared_task
def journeys_ingested(event_ids: list[int], changed_customer_ids: list[int]) -> None:
    """What the version before `IngestWork` published; kept so that tasks
    still queued across an upgrade are done, not dropped as unregistered."""
    events_received(
        event_ids=event_ids, changed_customer_ids=changed_customer_ids, now=timezone.now()
    )


@shared_task
def check_triggers() -> None:
    """Date-trait and schedule triggers. Two checks at once enroll no one
    twice: each fire is a unique row inserted before anyone is enrolled."""
    now = timezone.now()
    date_triggers_check(now=now)
    schedule_triggers_check(now=now)
