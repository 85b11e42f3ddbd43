"""Triggers: who enters which journey, and when. Only live journeys enroll.

- `segment_entered` / `segment_exited`: a listener on the segments' membership
  hook, told once per refresh with the id lists; each journey with that
  trigger enrolls the whole list in one statement. The same listener ends,
  as exited, enrollments of journeys that exit on leaving their segment.
- `event`: live API data is a row first (`ingest_work`: written in the
  ingest's transaction, published at its commit, swept if the broker lost
  it; an API request never waits for journeys); its task enrolls customers
  whose event matches a live journey's trigger (name and `where`), with the
  event in the enrollment's context, wakes enrollments waiting for such an
  event, and converts enrollments whose goal is now met. Backfills ("import",
  "demo") start nothing.
- `date_trait`: beat checks which customers' moment has come — the day
  `offset_days` from the date in their trait, at `at` in their own zone —
  and enrolls them once per (journey, customer, target date): a `TriggerFire`
  row, inserted first with ON CONFLICT DO NOTHING, is the key. A trait that
  moves to another date gets that date's fire.
- `schedule`: beat enrolls the segment's members once per cron slot (UTC),
  keyed the same way by a `TriggerFire` row per slot. A slot missed while beat
  was down is run late (within JOURNEY_TRIGGER_LOOKBACK_S), once: only the
  latest slot is run, never a burst of them.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from celery.schedules import crontab
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min, Q
from django.db.models.fields.json import KeyTransform

from apps.core.bulk import chunks
from apps.core.isotime import ISO_TIME_RE
from apps.customers.models import Customer, Event
from apps.segments.conditions import TraitTimeBetween
from apps.segments.hooks import on_membership_change
from apps.segments.models import Segment, SegmentMembership

from .engine import wake_waiting
from .enrollment import (
    Definitions,
    enrollments_check_goals,
    enrollments_exit_for_segment,
    enrollments_start,
    event_context,
    ids_subquery,
    live_journeys,
    properties_match,
)
from .graph import cron_fields
from .models import Journey, TriggerFire
from .times import zone_named

logger = logging.getLogger(__name__)


# --- segments ----------------------------------------------------------------------------


@on_membership_change
def segment_members_changed(
    *, segment: Segment, entered_ids: Sequence[int], exited_ids: Sequence[int], now: datetime
) -> None:
    """Exit, then enroll: each journey on its own, so one failing (logged)
    does not keep the others from their customers."""
    if exited_ids:
        try:
            enrollments_exit_for_segment(
                segment_slug=segment.slug, customer_ids=exited_ids, now=now
            )
        except Exception:
            logger.exception("segment %s: ending enrollments on exit failed", segment.slug)
    for journey, definition in live_journeys(Definitions()):
        trigger = definition.trigger
        if trigger.type not in ("segment_entered", "segment_exited"):
            continue
        if trigger.segment != segment.slug:
            continue
        ids = entered_ids if trigger.type == "segment_entered" else exited_ids
        if not ids:
            continue
        try:
            enrolled = enrollments_start(
                journey=journey,
                customer_ids=ids,
                now=now,
                context={"trigger": {"type": trigger.type, "segment": segment.slug}},
            )
        except Exception:
            logger.exception("journey %s: enrolling from segment %s failed", journey, segment.slug)
            continue
        logger.info(
            "journey %s: %d of %d customers enrolled (%s %s)",
            journey.slug,
            enrolled,
            len(ids),
            trigger.type,
            segment.slug,
        )


# --- events ------------------------------------------------------------------------------


@dataclass
class EventsResult:
    enrolled: int = 0
    woken: int = 0
    converted: int = 0


def events_received(
    *, event_ids: Sequence[int], changed_customer_ids: Sequence[int] = (), now: datetime
) -> EventsResult:
    """What live API data does to journeys: goals met convert, waits for an
    event end, event triggers enroll (first matching event per customer and
    journey; the event goes into the enrollment's context)."""
    result = EventsResult()
    events = list(
        Event.objects.filter(pk__in=ids_subquery(list(event_ids))).order_by("occurred_at", "pk")
    )
    with_events = sorted({e.customer_id for e in events})
    customers = sorted(set(with_events) | set(changed_customer_ids))
    if customers:
        result.converted = enrollments_check_goals(customer_ids=customers, now=now)
    if with_events:
        result.woken = wake_waiting(now=now, customer_ids=with_events)
    for journey, definition in live_journeys(Definitions()):
        trigger = definition.trigger
        if trigger.type != "event":
            continue
        contexts: dict[int, dict[str, Any]] = {}
        for event in events:
            if event.name != trigger.event or event.customer_id in contexts:
                continue
            if properties_match(event.properties, trigger.where):
                contexts[event.customer_id] = {"event": event_context(event)}
        if not contexts:
            continue
        try:
            result.enrolled += enrollments_start(
                journey=journey,
                customer_ids=list(contexts),
                now=now,
                context={"trigger": {"type": "event", "event": trigger.event}},
                contexts=contexts,
            )
        except Exception:
            logger.exception("journey %s: enrolling from events failed", journey.slug)
    return result


# --- date traits -------------------------------------------------------------------------


def _since(journey: Journey, *, now: datetime) -> datetime:
    """The start of the window a check looks back over: the lookback, but never
    before the journey was first published (a new journey does not fire for
    moments that passed before it existed)."""
    lookback = now - timedelta(seconds=settings.JOURNEY_TRIGGER_LOOKBACK_S)
    first = journey.versions.aggregate(first=Min("published_at"))["first"]
    return max(lookback, first) if first else lookback


def trait_date(value: Any, zone) -> date | None:
    """The calendar date a trait names, in the customer's zone: a date as
    itself, a time as its date there. None for anything else."""
    if not isinstance(value, str) or not ISO_TIME_RE.match(value):
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(zone).date()
    except OverflowError:  # 9999-12-31T23:00Z east of UTC: past what Python holds
        return None


NEVER_BEFORE = datetime.min.replace(tzinfo=UTC)
NEVER_AFTER = datetime.max.replace(tzinfo=UTC)


def fire_moment(target: date, offset_days: int, at: str, zone) -> datetime:
    """When a date trait's trigger fires: `offset_days` from `target` at
    `at` (HH:MM) in `zone`, in UTC. A moment past what Python can hold (a
    trait in the year 9999 and a positive offset) never comes: the latest
    or the earliest UTC moment, outside any window a check looks at."""
    hour, minute = (int(part) for part in at.split(":"))
    try:
        day = target + timedelta(days=offset_days)
        return datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return NEVER_BEFORE if offset_days < 0 else NEVER_AFTER


def date_triggers_check(*, now: datetime) -> int:
    """Fire the date-trait triggers of live journeys whose moment is due;
    returns the customers enrolled."""
    enrolled = 0
    for journey, definition in live_journeys(Definitions()):
        if definition.trigger.type != "date_trait":
            continue
        try:
            enrolled += _date_trait_fire(journey, definition.trigger, now=now)
        except Exception:
            logger.exception("journey %s: date trigger check failed", journey.slug)
    return enrolled


def _date_trait_fire(journey: Journey, trigger, *, now: datetime) -> int:
    since = _since(journey, now=now)
    offset = timedelta(days=trigger.offset_days)
    # Zones are at most 14 hours from UTC and `at` is within the day: a trait
    # whose moment is in (since, now] lies inside this band of trait times.
    low, high = since - offset - timedelta(days=2), now - offset + timedelta(days=2)
    candidates = (
        Customer.objects.filter(Q(TraitTimeBetween(trigger.trait, low, high, strict=False)))
        .annotate(trait_value=KeyTransform(trigger.trait, "traits"))
        .values_list("pk", "timezone", "trait_value")
        .order_by("pk")
    )
    due: dict[int, date] = {}
    for pk, zone_name, value in candidates.iterator(chunk_size=2_000):
        zone, _ = zone_named(zone_name)
        target = trait_date(value, zone)
        if target is None:
            continue
        moment = fire_moment(target, trigger.offset_days, trigger.at, zone)
        if since < moment <= now:
            due[pk] = target
    if not due:
        return 0
    enrolled = 0
    for chunk in chunks(sorted(due)):
        with transaction.atomic():
            keys = {pk: f"{pk}:{due[pk].isoformat()}:{trigger.offset_days:+d}" for pk in chunk}
            fired = _fires_insert(journey, [(pk, key) for pk, key in keys.items()], now=now)
            if not fired:
                continue
            contexts = {
                pk: {
                    "trigger": {
                        "type": "date_trait",
                        "trait": trigger.trait,
                        "date": due[pk].isoformat(),
                        "offset_days": trigger.offset_days,
                    }
                }
                for pk in fired
            }
            started = enrollments_start(
                journey=journey, customer_ids=fired, now=now, contexts=contexts, returning=True
            )
            TriggerFire.objects.filter(
                journey=journey, key__in=[keys[pk] for pk in started]
            ).update(enrolled=1)
            enrolled += len(started)
    return enrolled


def _fires_insert(
    journey: Journey, rows: Sequence[tuple[int | None, str]], *, now: datetime
) -> list[int | None]:
    """Insert fires (customer, key), skipping keys already fired; returns the
    customers (None for a schedule slot) of the rows this call inserted."""
    table = TriggerFire._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s, 0)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (journey_id, customer_id, key, fired_at, enrolled) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (journey_id, key) DO NOTHING RETURNING customer_id",
            [p for customer, key in rows for p in (journey.pk, customer, key, now)],
        )
        return [row[0] for row in cursor.fetchall()]


# --- schedules ---------------------------------------------------------------------------


def _cron(expression: str) -> crontab:
    return crontab(**cron_fields(expression))


def cron_matches(schedule: crontab, moment: datetime) -> bool:
    """Whether a UTC minute is one of the cron's: all five fields must match,
    as for beat's own crontab (day of week 0 is Sunday)."""
    return (
        moment.minute in schedule.minute
        and moment.hour in schedule.hour
        and moment.day in schedule.day_of_month
        and moment.month in schedule.month_of_year
        and (moment.weekday() + 1) % 7 in schedule.day_of_week
    )


def latest_slot(expression: str, *, after: datetime, until: datetime) -> datetime | None:
    """The latest cron slot in (after, until], or None."""
    schedule = _cron(expression)
    moment = until.astimezone(UTC).replace(second=0, microsecond=0)
    while moment > after:
        if cron_matches(schedule, moment):
            return moment
        moment -= timedelta(minutes=1)
    return None


def schedule_triggers_check(*, now: datetime) -> int:
    """Run the schedule triggers of live journeys whose slot has come (once
    per slot); returns the customers enrolled."""
    enrolled = 0
    for journey, definition in live_journeys(Definitions()):
        trigger = definition.trigger
        if trigger.type != "schedule":
            continue
        slot = latest_slot(trigger.cron, after=_since(journey, now=now), until=now)
        if slot is None:
            continue
        try:
            with transaction.atomic():
                key = f"slot:{slot:%Y-%m-%dT%H:%MZ}"
                if not _fires_insert(journey, [(None, key)], now=now):
                    continue  # another check ran this slot
                members = list(
                    SegmentMembership.objects.filter(
                        segment__slug=trigger.segment, exited_at__isnull=True
                    )
                    .order_by()
                    .values_list("customer_id", flat=True)
                )
                started = enrollments_start(
                    journey=journey,
                    customer_ids=members,
                    now=now,
                    context={
                        "trigger": {
                            "type": "schedule",
                            "segment": trigger.segment,
                            "slot": slot.isoformat(),
                        }
                    },
                )
                TriggerFire.objects.filter(journey=journey, key=key).update(enrolled=started)
        except Exception:
            logger.exception("journey %s: schedule trigger failed", journey.slug)
            continue
        logger.info(
            "journey %s: schedule slot %s enrolled %d of %d members",
            journey.slug,
            slot,
            started,
            len(members),
        )
        enrolled += started
    return enrolled
