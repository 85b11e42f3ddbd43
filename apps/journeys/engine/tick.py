"""The tick: wake, claim what is due, hand it to workers.

A tick (`engine_tick`, beat, every ENGINE_TICK_INTERVAL_S) claims the due
active enrollments of live journeys in batches — `FOR UPDATE SKIP LOCKED`, so
concurrent ticks take disjoint rows without waiting, plus a lease
(`lease_until`, `lease_token`) set by the same statement — and, once that
commits, publishes their ids in chunks to worker tasks (`advance.py` does
the work). A claim nobody processes (a lost task, a killed worker) expires
and is claimed again; one whose task the broker refused, or lost with its
data (a Redis restarted without persistence, `apps.core.broker`), is
released at once and claimed by the next tick.
"""

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.fields.json import KeyTransform

from apps.core.broker import broker_lost_data
from apps.customers.models import Event, EventStat

from ..enrollment import Definitions
from ..models import Enrollment, EnrollmentStep, Journey, JourneyVersion

logger = logging.getLogger(__name__)

# The tick's name for the broker's epoch (apps.core.broker).
BROKER_EPOCH_NAME = "engine"
# How far back the tick looks for events that may end a wait_for_event (the
# event listener wakes API events at once; this catches imports and misses).
WAKE_WINDOW = timedelta(minutes=10)


@dataclass
class TickResult:
    claimed: int = 0
    tasks: int = 0
    woken: int = 0
    outstanding: int = 0  # claimed by earlier ticks and not advanced yet


def engine_tick(*, now: datetime, publish: Callable[[list[int]], None] | None = None) -> TickResult:
    """Wake enrollments whose awaited event has arrived, claim what is due and,
    after commit, hand it to workers in chunks of ENGINE_CHUNK_SIZE ids
    (`publish`, by default the `advance_enrollments` task). At most
    ENGINE_MAX_PER_TICK per tick, and only while fewer than ENGINE_MAX_CLAIMED
    are claimed and waiting for a worker."""
    if publish is None:
        from ..tasks import advance_enrollments  # the task module imports this one

        def publish(ids: list[int]) -> None:
            advance_enrollments.delay(ids)

    if broker_lost_data(BROKER_EPOCH_NAME, now=now):
        # The broker lost its data (a Redis restarted without persistence):
        # the tasks of the claims still outstanding went with it. Their
        # leases end now, so this tick claims them again instead of waiting
        # ENGINE_LEASE_S (and holding the backpressure budget meanwhile).
        released = _outstanding_query(now=now).update(lease_until=now)
        if released:
            logger.warning("engine tick: the broker lost its data; %d claims released", released)
    result = TickResult(woken=wake_waiting(now=now), outstanding=_outstanding(now=now))
    # Backpressure: a backlog waits in the table, not in the broker, where its
    # claims would expire before a worker got to them and be taken again.
    budget = min(settings.ENGINE_MAX_PER_TICK, settings.ENGINE_MAX_CLAIMED - result.outstanding)
    token = secrets.token_hex(16)
    chunk = settings.ENGINE_CHUNK_SIZE
    while result.claimed < budget:
        limit = min(settings.ENGINE_CLAIM_BATCH, budget - result.claimed)
        with transaction.atomic():
            ids = _claim(now=now, limit=limit, token=token)
            for start in range(0, len(ids), chunk):
                transaction.on_commit(
                    partial(_publish_or_release, publish, ids[start : start + chunk], token, now)
                )
                result.tasks += 1
        result.claimed += len(ids)
        if len(ids) < limit:
            break
    if result.claimed:
        logger.info("engine tick: claimed %d enrollments in %d tasks", result.claimed, result.tasks)
    return result


def _publish_or_release(
    publish: Callable[[list[int]], None], ids: list[int], token: str, now: datetime
) -> None:
    """Publish a chunk of claimed enrollments; when the broker refuses it,
    release the claims (the lease ends now) so the next tick takes them again
    at once, rather than when their lease would have run out. The next
    chunks are still tried."""
    try:
        publish(ids)
    except Exception:
        logger.exception("engine tick: publishing %d enrollments failed; released", len(ids))
        Enrollment.objects.filter(pk__in=ids, lease_token=token).update(lease_until=now)


_CLAIM = """
WITH due AS (
    SELECT e.id FROM {enrollment} AS e JOIN {journey} AS j ON j.id = e.journey_id
    WHERE e.state = 'active' AND e.next_run_at <= %s AND j.status = 'live' AND {claimable}
    ORDER BY e.next_run_at
    LIMIT %s
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE {enrollment} AS e SET lease_until = %s, lease_token = %s
FROM due WHERE e.id = due.id
RETURNING e.id
"""
# What may be claimed, each read from its own partial index: enrollments whose
# holder's lease ran out (`enrollment_claimed`, by lease_until), then those
# nobody holds (`enrollment_due`, by next_run_at). One condition for both
# would walk, on every claim, past all the rows earlier ticks hold and
# workers have not reached yet (up to ENGINE_MAX_CLAIMED: 20,000 rows read
# for each batch of 2,000 claimed).
_EXPIRED = "e.lease_token <> '' AND e.lease_until <= %s"
_FREE = "e.lease_token = ''"


def _outstanding(*, now: datetime) -> int:
    """Due enrollments whose claim is still live: handed to workers, not yet
    advanced (read from the claimed index: as many rows as are claimed,
    whatever the backlog)."""
    return _outstanding_query(now=now).count()


def _outstanding_query(*, now: datetime):
    claimed = Enrollment.objects.filter(state=Enrollment.State.ACTIVE).exclude(lease_token="")
    return claimed.filter(next_run_at__lte=now, lease_until__gt=now)


def _claim(*, now: datetime, limit: int, token: str) -> list[int]:
    """Lease up to `limit` due enrollments of live journeys to `token`: those
    whose lease expired first (their claim was lost), then unclaimed ones."""
    tables = {"enrollment": Enrollment._meta.db_table, "journey": Journey._meta.db_table}
    until = now + timedelta(seconds=settings.ENGINE_LEASE_S)
    ids: list[int] = []
    with connection.cursor() as cursor:
        for claimable, params in ((_EXPIRED, [now]), (_FREE, [])):
            want = limit - len(ids)
            if want <= 0:
                break
            sql = _CLAIM.format(claimable=claimable, **tables)
            cursor.execute(sql, [now, *params, want, until, token])
            ids += [row[0] for row in cursor.fetchall()]
    return sorted(ids)


def wake_waiting(*, now: datetime, customer_ids: Sequence[int] | None = None) -> int:
    """Make enrollments waiting for an event due now when that event has
    arrived since their wait began (set-based: one UPDATE per wait_for_event
    node of a running journey). The tick looks at events of the last
    WAKE_WINDOW; the event listener passes the customers it just heard of.
    A wake is a hint: the node itself checks the event exactly."""
    woken = 0
    definitions = Definitions()
    versions = JourneyVersion.objects.filter(journey__status=Journey.Status.LIVE).order_by("pk")
    for version in versions:
        definition = definitions.find(version)
        if definition is None:
            continue
        for node in definition.nodes:
            if node.type != "wait_for_event":
                continue
            started = EnrollmentStep.objects.filter(
                enrollment=OuterRef(OuterRef("pk")), node_id=node.id, finished_at__isnull=True
            ).values("started_at")[:1]
            arrived = Event.objects.filter(
                customer=OuterRef("customer_id"),
                name=node.event,
                occurred_at__gte=Subquery(started),
                occurred_at__lte=now,
            )
            for n, (key, value) in enumerate((node.where or {}).items()):
                # KeyTransform, not properties__<key>: a key may hold "__".
                arrived = arrived.alias(**{f"_where{n}": KeyTransform(key, "properties")})
                arrived = arrived.filter(**{f"_where{n}": value})
            waiting = Enrollment.objects.filter(
                journey_version=version,
                current_node=node.id,
                state=Enrollment.State.ACTIVE,
                next_run_at__gt=now,
            )
            if customer_ids is None:
                recent = EventStat.objects.filter(
                    name=node.event, last_at__gt=now - WAKE_WINDOW, last_at__lte=now
                )
                waiting = waiting.filter(customer_id__in=recent.values("customer_id"))
            else:
                waiting = waiting.filter(customer_id__in=list(customer_ids))
            woken += waiting.filter(Exists(arrived)).update(next_run_at=now)
    return woken
