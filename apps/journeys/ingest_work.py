"""Live ingested data reaches the journeys even when the broker blinks
(RELIABILITY.md 28): the work is a row first, the way a send is a `Message`.

- `ingest_work_record`, an in-transaction listener on the customers' ingest
  hook, writes one `IngestWork` row per API ingest call (the ids of the events
  stored and of the customers changed, never a row per event) in the ingest's
  own transaction, stamped `published_at`, and publishes its id when the
  transaction commits. A broker that refuses the publication takes the stamp
  off: the sweeper's. Backfills ("import", "demo") and systems with no live
  journey write nothing (one indexed look at the journeys table).
- `ingest_work_process(ids, now=...)`, what the task runs, claims each row by
  deleting it in the transaction that does its work (`events_received`:
  goals, waits for an event, event triggers). A second run of the same row
  (the task ran, then the sweeper republished it; or two at once) finds it
  gone, or blocks on the first's delete and then finds it gone: the row's
  customers are enrolled once, whatever the journey's re-entry policy. A run
  that fails rolls back, row included, and the row is tried again later
  (backoff, at most MAX_ATTEMPTS runs; then it stays, with its error, and
  is logged).
- `ingest_work_sweep(now=...)`, on beat every JOURNEY_INGEST_SWEEP_INTERVAL_S:
  publishes the rows never published (the broker was down at commit) or
  published more than JOURNEY_INGEST_REPUBLISH_AFTER_S ago and still there
  (a task lost, or a process that died between its commit and its
  publication); and, when the broker lost its data since the last sweep
  (`apps.core.broker`), all of them at once.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from apps.core.broker import broker_lost_data
from apps.core.bulk import chunks
from apps.customers.hooks import on_ingest_in_transaction

from .models import IngestWork, Journey
from .triggers import EventsResult, events_received

logger = logging.getLogger(__name__)

# Processing runs that may fail (errors, not lost tasks) before a row is left
# for a person to look at; the wait before run n+1 is RETRY_BASE_S * 2**n.
MAX_ATTEMPTS = 5
RETRY_BASE_S = 60
# Rows per published task, and at most per sweep (the rest: the next sweep).
TASK_ROWS = 50
SWEEP_LIMIT = 2_000
# The sweeper's marker in the broker (apps.core.broker).
BROKER_MARKER = "journeys-ingest"


@on_ingest_in_transaction
def ingest_work_record(
    *, event_ids: Sequence[int], changed_customer_ids: Sequence[int], now: datetime, source: str
) -> None:
    """One row for one live ingest call, in its transaction; published at commit."""
    if source != "api":
        return
    if not Journey.objects.filter(status=Journey.Status.LIVE).exists():
        return
    work = IngestWork.objects.create(
        event_ids=list(event_ids),
        changed_customer_ids=list(changed_customer_ids),
        received_at=now,
        published_at=now,
    )
    transaction.on_commit(partial(ingest_work_publish, [work.pk], now=now, stamped=True))


def ingest_work_publish(ids: Sequence[int], *, now: datetime, stamped: bool = False) -> int:
    """Publish a task per TASK_ROWS rows and stamp `published_at` (unless the
    rows are `stamped` already); returns how many rows went out. A broker
    error stops here and is logged, never raised (the data is committed):
    the rows left without a stamp are the sweeper's."""
    from .tasks import process_ingested  # the task module imports this one

    ids = list(ids)
    done = 0
    for chunk in chunks(ids, TASK_ROWS):
        try:
            process_ingested.delay(list(chunk))
        except Exception:
            logger.exception(
                "journeys: publishing %d ingest work row(s) failed; the sweeper will", len(ids)
            )
            if stamped:
                IngestWork.objects.filter(pk__in=ids[done:]).update(published_at=None)
            break
        if not stamped:
            IngestWork.objects.filter(pk__in=chunk).update(published_at=now)
        done += len(chunk)
    return done


def ingest_work_process(work_ids: Sequence[int], *, now: datetime) -> EventsResult:
    """Do each row's work once (see the module's docstring); rows already
    done (gone) are skipped. Returns the sum of what the rows did."""
    total = EventsResult()
    for pk in work_ids:
        try:
            with transaction.atomic():
                row = IngestWork.objects.filter(pk=pk).values_list(
                    "event_ids", "changed_customer_ids"
                )
                found = row.first()
                # The claim: whoever deletes the row does its work; a
                # concurrent run waits on this delete, then deletes nothing.
                if found is None or not IngestWork.objects.filter(pk=pk).delete()[0]:
                    continue
                event_ids, changed_customer_ids = found
                result = events_received(
                    event_ids=event_ids, changed_customer_ids=changed_customer_ids, now=now
                )
        except Exception as exc:
            logger.exception("journeys: ingest work %s failed", pk)
            _failed(pk, exc, now=now)
            continue
        total.enrolled += result.enrolled
        total.woken += result.woken
        total.converted += result.converted
    return total


def _failed(pk: int, exc: Exception, *, now: datetime) -> None:
    """Count the failed run and say when the next may be: the sweeper
    publishes the row again then (never, after MAX_ATTEMPTS)."""
    attempts = IngestWork.objects.filter(pk=pk).values_list("attempts", flat=True).first()
    if attempts is None:
        return
    attempts += 1
    IngestWork.objects.filter(pk=pk).update(
        attempts=attempts,
        error=f"{type(exc).__name__}: {exc}"[:2000],
        retry_after=now + timedelta(seconds=RETRY_BASE_S * 2**attempts),
        published_at=None,
    )
    if attempts >= MAX_ATTEMPTS:
        logger.error(
            "journeys: ingest work %s failed %d times and is left for review: %s",
            pk,
            attempts,
            exc,
        )


def ingest_work_sweep(*, now: datetime) -> int:
    """Publish the rows whose publication or task was lost (see the module's
    docstring); returns how many went out. Overlapping sweeps are harmless:
    a row published twice is processed once."""
    if broker_lost_data(BROKER_MARKER, now=now):
        # Every task published before the loss went with it: all rows still
        # here are unpublished now, and go out at once (within SWEEP_LIMIT per
        # sweep; the next sweeps take the rest, as for any unpublished row).
        lost = IngestWork.objects.filter(published_at__isnull=False).update(published_at=None)
        if lost:
            logger.warning(
                "journeys: the broker lost its data; republishing %d ingest row(s)", lost
            )
    stale = now - timedelta(seconds=settings.JOURNEY_INGEST_REPUBLISH_AFTER_S)
    ids = list(
        IngestWork.objects.filter(attempts__lt=MAX_ATTEMPTS)
        .filter(Q(retry_after__isnull=True) | Q(retry_after__lte=now))
        .filter(Q(published_at__isnull=True) | Q(published_at__lt=stale))
        .order_by("pk")
        .values_list("pk", flat=True)[:SWEEP_LIMIT]
    )
    return ingest_work_publish(ids, now=now) if ids else 0
