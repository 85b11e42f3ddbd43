"""Writes for tracking.

Requests are cheap and processing is in bulk:

- The open pixel and the click redirect write one `Engagement` row each, in
  one statement (`open_record`, `click_record`), flagged as machine when the
  request alone says so (HEAD, a scanner's user agent).
- Provider webhooks store their events as received (`provider_events_store`:
  one bulk insert, duplicates skipped on the provider's event id) and answer.
- `tracking_process`, run by the `tracking` queue (on beat every few seconds
  and after each webhook), claims pending rows in batches and, per batch, in
  one transaction: matches provider events to messages (our custom arg, then
  the provider's message id; unmatched ones are kept), flags clicks that came
  too soon after delivery, moves each message forward only (the transition
  table of `apps.messaging.transitions`) with its timestamps, suppresses the
  addresses that bounced, complained or unsubscribed, and records a customer
  `Event` for each human engagement through `ingest` (source "api", so
  triggers hear it). Machine engagement is kept with its reason and does none
  of that.

Inbound SMS (`inbound_sms_receive`) is handled at once, since its answer is
the webhook's response.
"""

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models.expressions import RawSQL
from django.utils.dateparse import parse_datetime

from apps.core.bulk import datetime_adapter, staged_write, values_subquery
from apps.customers.models import Customer
from apps.customers.schemas import TrackIn
from apps.customers.services import ingest
from apps.messaging import consent
from apps.messaging.models import Channel, ConsentRecord, Message, Suppression
from apps.messaging.selectors import normalize_address
from apps.messaging.transitions import can_move

from . import hooks, sendgrid_events, twilio_events
from .detection import click_too_soon, request_machine_reason, scanner_agent
from .events import (
    EMAIL_EVENTS,
    SMS_EVENTS,
    SMS_OPTED_IN,
    SMS_OPTED_OUT,
    SMS_REPLIED,
    IncomingEvent,
    Outcome,
)
from .models import Engagement, InboundSms, ProviderEvent, TrackedLink

logger = logging.getLogger(__name__)

K = Engagement.Kind
S = Message.Status
# Rows per batch (one transaction). Bigger batches fold more of a message's
# events into one update of it (a send's events come in close together):
# 5,000 SendGrid events cost about a third less CPU each than 1,000.
BATCH_SIZE = 5000
MAX_USER_AGENT = 300
OUTCOMES = {
    ProviderEvent.Provider.SENDGRID: sendgrid_events.outcome,
    ProviderEvent.Provider.TWILIO: twilio_events.outcome,
}


# --- links and requests -------------------------------------------------------


def tracked_links_store(*, message_id: int, urls: Sequence[str]) -> None:
    """Store the links of a rendered email (position = index). Rendering the
    same message again stores the same positions again (upsert)."""
    tracked_links_store_many({message_id: urls})


def tracked_links_store_many(links: Mapping[int, Sequence[str]]) -> None:
    """`tracked_links_store` for many messages, {message id: urls}, in one insert."""
    rows = [
        TrackedLink(message_id=message_id, position=i, url=url)
        for message_id, urls in links.items()
        for i, url in enumerate(urls)
    ]
    if rows:
        TrackedLink.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["message", "position"],
            update_fields=["url"],
        )


_ENGAGEMENT_COLUMNS = (
    "message_id, kind, source, occurred_at, created_at, machine, machine_reason, "
    "link_id, url, user_agent, provider_event_id, processed_at, error"
)
# One statement each; the SELECT makes a vanished message or link insert nothing.
_OPEN_INSERT = (
    f"INSERT INTO {Engagement._meta.db_table} ({_ENGAGEMENT_COLUMNS}) "  # noqa: S608
    "SELECT id, %s, %s, %s, %s, %s, %s, NULL, '', %s, NULL, NULL, '' "
    f"FROM {Message._meta.db_table} WHERE id = %s"
)
_CLICK_INSERT = (
    f"INSERT INTO {Engagement._meta.db_table} ({_ENGAGEMENT_COLUMNS}) "  # noqa: S608
    "SELECT message_id, %s, %s, %s, %s, %s, %s, id, url, %s, NULL, NULL, '' "
    f"FROM {TrackedLink._meta.db_table} WHERE message_id = %s AND position = %s "
    "RETURNING url"
)


def _insert_hit(statement: str, params: list) -> tuple | None:
    """Run a hit's INSERT (one statement) in a transaction of its own that
    does not wait for PostgreSQL to flush its write-ahead log: the request
    never waits for the disk, and a database crash could lose only the hits
    of its last fraction of a second (never a half-written row). Only the
    pixel and the redirect do this; webhooks and processing commit durably.

    Returns the statement's RETURNING row, or (rowcount,) without one."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        return _insert_hit_one_trip(statement, params)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(statement, params)
        return cursor.fetchone() if cursor.description else (cursor.rowcount,)


def _insert_hit_one_trip(statement: str, params: list) -> tuple | None:
    """The same in a single round trip (the request's only one besides
    Django's connection check): begin, the setting, the INSERT and the commit
    sent together, which psycopg's client-side binding cursors allow. Only
    outside a transaction (an open one would be committed by it)."""
    with connection.cursor() as cursor:
        try:
            cursor.execute(
                f"BEGIN; SET LOCAL synchronous_commit TO OFF; {statement}; COMMIT", params
            )
        except DatabaseError:
            cursor.execute("ROLLBACK")  # a failed statement leaves the block open
            raise
        raw = cursor.cursor
        raw.nextset()  # SET
        raw.nextset()  # the INSERT
        return raw.fetchone() if raw.description else (raw.rowcount,)


def open_record(*, message_id: int, now: datetime, method: str, user_agent: str) -> bool:
    """Record an open from the pixel, in one statement; False when the message
    does not exist (any more). Processed later, in bulk."""
    reason = request_machine_reason(method=method, user_agent=user_agent)
    at = datetime_adapter()(now)
    agent = user_agent[:MAX_USER_AGENT]
    row = _insert_hit(
        _OPEN_INSERT,
        [K.OPEN, Engagement.Source.PIXEL, at, at, bool(reason), reason, agent, message_id],
    )
    return row == (1,)


def click_record(
    *, message_id: int, position: int, now: datetime, method: str, user_agent: str
) -> str | None:
    """Record a click from the redirect, in one statement, and return the URL
    stored for this message and position; None when there is none (the
    caller then redirects nowhere)."""
    reason = request_machine_reason(method=method, user_agent=user_agent)
    at = datetime_adapter()(now)
    agent = user_agent[:MAX_USER_AGENT]
    row = _insert_hit(
        _CLICK_INSERT,
        [K.CLICK, Engagement.Source.REDIRECT, at, at, bool(reason), reason, agent,
         message_id, position],
    )  # fmt: skip
    return row[0] if row else None


# --- provider events in -------------------------------------------------------


@dataclass
class StoreResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0  # items that could not be read: stored with their error


_PROVIDER_EVENT_COLUMNS = (
    ("provider", "text"),
    ("event_id", "text"),
    ("kind", "text"),
    ("provider_message_id", "text"),
    ("address", "text"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("payload", "text"),
    ("processed_at", "timestamptz"),
    ("error", "text"),
)


def provider_events_store(events: Sequence[IncomingEvent], *, now: datetime) -> StoreResult:
    """Store a webhook's events as received, each once (a repeat of an event
    id, in this batch, from an earlier delivery or from a concurrent one,
    stores nothing: `ON CONFLICT DO NOTHING` on the unique event id), in one
    bulk statement, and have them processed once the transaction commits."""
    result = StoreResult(received=len(events))
    if not events:
        return result
    unique: dict[tuple[str, str], IncomingEvent] = {}
    for event in events:
        unique.setdefault((event.provider, event.event_id), event)
    db_datetime = datetime_adapter()
    stored_at = db_datetime(now)
    rows = [
        (e.provider, e.event_id, e.kind, e.provider_message_id[:200], e.address[:254],
         db_datetime(e.occurred_at), stored_at, json.dumps(e.payload),
         # A refused item is stored with its error and never processed.
         stored_at if e.error else None, e.error)
        for e in unique.values()
    ]  # fmt: skip
    payload = "payload::jsonb" if connection.vendor == "postgresql" else "payload"
    names = ", ".join(name for name, _ in _PROVIDER_EVENT_COLUMNS)
    with transaction.atomic():
        inserted = staged_write(
            "providerevent",
            _PROVIDER_EVENT_COLUMNS,
            rows,
            f"INSERT INTO {ProviderEvent._meta.db_table} ({names}) "  # noqa: S608
            f"SELECT {names.replace('payload', payload)} FROM {{staged}} WHERE true "
            # In event id order: concurrent deliveries of the same events wait
            # for each other in one order, never in a cycle.
            "ORDER BY provider, event_id "
            "ON CONFLICT (provider, event_id) DO NOTHING RETURNING error",
        )
        if any(not error for (error,) in inserted):
            transaction.on_commit(_publish_processing)
    result.stored = len(inserted)
    result.duplicates = len(events) - len(inserted)
    result.refused = sum(1 for (error,) in inserted if error)
    return result


def _publish_processing() -> None:
    """Ask a tracking worker to process what was just stored; if the broker is
    down, beat's periodic run picks it up instead."""
    from .tasks import process_tracking

    try:
        process_tracking.delay()
    except Exception:
        logger.warning("tracking: could not publish process_tracking; beat will run it", exc_info=1)


# --- processing ---------------------------------------------------------------


@dataclass
class ProcessResult:
    provider_events: int = 0
    unmatched: int = 0
    hits: int = 0
    machine: int = 0
    messages_moved: int = 0
    events_recorded: int = 0
    suppressed: int = 0
    failed: int = 0

    def add(self, other: "ProcessResult") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Msg:
    """What processing needs of a message (one joined query per batch)."""

    id: int
    customer_id: int
    external_id: str
    channel: str
    journey: str
    node_id: str
    template: str | None
    status: str
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    failed_at: datetime | None
    error: str
    is_test: bool
    to_address: str


_MSG_FIELDS = (
    "id",
    "customer_id",
    "customer__external_id",
    "channel",
    "journey",
    "node_id",
    "template__slug",
    "status",
    "sent_at",
    "delivered_at",
    "opened_at",
    "clicked_at",
    "failed_at",
    "error",
    "is_test",
    "to_address",
)


def _messages_locked(ids: Iterable[int]) -> dict[int, _Msg]:
    """The messages, row-locked in id order on PostgreSQL (one order for every
    processor, so concurrent batches never deadlock on them)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = (
        Message.objects.filter(id__in=_ids_subquery(ids))
        .order_by("id")
        .select_for_update(of=("self",))
        .values_list(*_MSG_FIELDS)
    )
    return {row[0]: _Msg(*row) for row in rows}


def _ids_subquery(ids: Iterable[int]) -> RawSQL:
    """`SELECT` of the given ids, for `id__in=`: one parameter however many
    (an array on PostgreSQL, a JSON list on SQLite), not a placeholder each."""
    ids = list(ids)
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", [ids])
    return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(ids)])


@dataclass
class _Occurrence:
    """One engagement or report of a message (or, unmatched, of an address)."""

    message: _Msg | None
    occurred_at: datetime
    source: str
    outcome: Outcome
    channel: str
    address: str = ""
    provider_event_id: int | None = None
    machine_reason: str = ""
    link_id: int | None = None


def tracking_process(
    *,
    now: datetime,
    batch_size: int = BATCH_SIZE,
    max_batches: int = 50,
    budget_s: float | None = None,
) -> ProcessResult:
    """Process pending provider events and pixel/redirect hits, batch by batch,
    until none is left, `max_batches` of each were done or `budget_s` seconds
    of work have passed (the next run takes the rest). Safe to run
    concurrently: batches are claimed with SKIP LOCKED on PostgreSQL (SQLite
    runs one writer at a time)."""
    total = ProcessResult()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    # Each claim starts after the last row this run claimed: the rows before
    # it are done (or another processor's), and the pending index still holds
    # their entries until vacuum, which a claim from the start would walk
    # again each time.
    after = {ProviderEvent: 0, Engagement: 0}
    for _ in range(max_batches):
        if deadline is not None and time.monotonic() > deadline:
            break
        done = ProcessResult()
        done.add(
            _claim_and_process(
                ProviderEvent, _PROVIDER_EVENT_FIELDS, _process_provider_events, now, batch_size,
                after,
            )
        )  # fmt: skip
        done.add(_claim_and_process(Engagement, _HIT_FIELDS, _process_hits, now, batch_size, after))
        total.add(done)
        if not (done.provider_events or done.hits):
            break
    return total


# What processing reads of the rows it claims (plain values, not model
# instances: a batch is thousands of rows).
_PROVIDER_EVENT_FIELDS = (
    "id", "provider", "kind", "message_id", "provider_message_id", "address", "occurred_at",
    "payload",
)  # fmt: skip
_HIT_FIELDS = ("id", "message_id", "kind", "source", "occurred_at", "machine_reason", "url",
               "link_id")  # fmt: skip


def _claim_and_process(
    model, fields: Sequence[str], process, now: datetime, batch_size: int, after: dict
) -> ProcessResult:
    """Claim a batch of pending rows of `model` and process it in one
    transaction; processing marks the rows processed (with whatever else it
    sets on them, in the same statement). Should the batch fail, each row is
    retried on its own, and a row that fails alone is marked processed with
    its error (visible in the admin) rather than blocking the queue for ever.
    `after[model]`: claim rows after this id; set to the last one claimed."""
    with transaction.atomic():
        rows = _claim(model, fields, batch_size=batch_size, after=after[model])
        if not rows:
            return ProcessResult()
        after[model] = rows[-1].id
        try:
            with transaction.atomic():
                return process(rows, now=now)
        except Exception:
            logger.exception("tracking: a batch of %d %s failed; one by one", len(rows), model)
        result = ProcessResult()
        for row in rows:
            try:
                with transaction.atomic():
                    result.add(process([row], now=now))
            except Exception as exc:
                logger.exception("tracking: %s %s failed", model.__name__, row.id)
                model.objects.filter(pk=row.id).update(
                    processed_at=now, error=f"processing failed: {type(exc).__name__}: {exc}"
                )
                result.failed += 1
        return result


def _claim(model, fields: Sequence[str], *, batch_size: int, after: int = 0) -> list:
    """Claim up to `batch_size` pending rows, oldest first: row-locked until
    the caller's transaction ends, in which processing marks them processed.
    Concurrent claims skip each other's rows (SKIP LOCKED) on PostgreSQL;
    SQLite has one writer at a time. (Locking rather than marking here spares
    each row a second write: one UPDATE per row, at the end, sets the mark and
    what processing found.)

    On PostgreSQL the claim walks the pending index in id order and stops
    after `batch_size` rows. After a burst of inserts the table's statistics
    are stale (autovacuum has not analyzed it yet) and the planner would
    rather fetch and sort every pending row, for each batch; bitmap scans are
    off for this statement, so it cannot."""
    table = model._meta.db_table
    postgresql = connection.vendor == "postgresql"
    lock = " FOR UPDATE SKIP LOCKED" if postgresql else ""
    with connection.cursor() as cursor:
        if postgresql:
            cursor.execute("SET LOCAL enable_bitmapscan TO off")
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {table} "  # noqa: S608
            f"WHERE processed_at IS NULL AND id > %s ORDER BY id LIMIT %s{lock}",
            [after, batch_size],
        )
        returned = cursor.fetchall()
        if postgresql:
            cursor.execute("SET LOCAL enable_bitmapscan TO DEFAULT")
    rows = [SimpleNamespace(**dict(zip(fields, values, strict=True))) for values in returned]
    for row in rows:
        row.occurred_at = _from_db_datetime(row.occurred_at)
        if isinstance(getattr(row, "payload", None), str | bytes):
            row.payload = json.loads(row.payload)
    rows.sort(key=lambda row: row.id)
    return rows


def _from_db_datetime(value) -> datetime:
    """An aware datetime from a raw column value (SQLite returns UTC text)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = parse_datetime(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _process_provider_events(rows: list[SimpleNamespace], *, now: datetime) -> ProcessResult:
    matched = _match(rows)
    messages = _messages_locked(matched.values())
    occurrences: list[_Occurrence] = []
    for row in rows:
        message = messages.get(matched.get(row.id))
        outcome = OUTCOMES[row.provider](row)
        channel = Channel.EMAIL if row.provider == ProviderEvent.Provider.SENDGRID else Channel.SMS
        occurrences.append(
            _Occurrence(
                message=message,
                occurred_at=row.occurred_at,
                source=row.provider,
                outcome=outcome,
                channel=channel,
                address=row.address or (message.to_address if message else ""),
                provider_event_id=row.id,
                machine_reason=outcome.machine_reason,
            )
        )
    result = _apply(occurrences, now=now)
    _insert_engagements(
        [o for o in occurrences if o.message is not None and o.outcome.engagement], now=now
    )
    _staged_update(
        ProviderEvent,
        "providerevent_done",
        (("processed_at", "timestamptz"), ("message_id", "bigint")),
        [(row.id, now, matched.get(row.id)) for row in rows],
    )
    result.provider_events = len(rows)
    result.unmatched = sum(1 for o in occurrences if o.message is None)
    return result


_ENGAGEMENT_STAGED = (
    ("message_id", "bigint"),
    ("kind", "text"),
    ("source", "text"),
    ("occurred_at", "timestamptz"),
    ("created_at", "timestamptz"),
    ("machine", "boolean"),
    ("machine_reason", "text"),
    ("url", "text"),
    ("user_agent", "text"),
    ("provider_event_id", "bigint"),
    ("processed_at", "timestamptz"),
)


def _insert_engagements(occurrences: Sequence[_Occurrence], *, now: datetime) -> None:
    """The engagements of provider events, written processed, in one statement."""
    if not occurrences:
        return
    db_datetime = datetime_adapter()
    at = db_datetime(now)
    names = ", ".join(name for name, _ in _ENGAGEMENT_STAGED)
    staged_write(
        "engagement",
        _ENGAGEMENT_STAGED,
        [(o.message.id, o.outcome.engagement, o.source, db_datetime(o.occurred_at), at,
          bool(o.machine_reason), o.machine_reason[:200], o.outcome.url,
          o.outcome.user_agent[:MAX_USER_AGENT], o.provider_event_id, at)
         for o in occurrences],
        f"INSERT INTO {Engagement._meta.db_table} ({names}, error) "  # noqa: S608
        f"SELECT {names}, '' FROM {{staged}}",
    )  # fmt: skip


def _match(rows: Sequence[SimpleNamespace]) -> dict[int, int]:
    """provider event id → message id, for the events that match a message:
    the one they name (our custom arg), else the one the provider's message id
    belongs to."""
    hints: dict[int, int] = {}
    for row in rows:
        if row.message_id is not None:
            hints[row.id] = row.message_id
        elif row.provider == ProviderEvent.Provider.SENDGRID:
            hint = sendgrid_events.message_hint(row.payload)
            if hint is not None:
                hints[row.id] = hint
    existing = set(
        Message.objects.filter(id__in=_ids_subquery(set(hints.values()))).values_list(
            "id", flat=True
        )
    )
    matched = {pk: mid for pk, mid in hints.items() if mid in existing}
    wanted = {row.id: _send_id(row) for row in rows if row.id not in matched}
    wanted = {pk: sid for pk, sid in wanted.items() if sid}
    if wanted:
        by_send_id = dict(
            Message.objects.filter(
                provider_message_id__in=values_subquery(sorted(set(wanted.values())))
            ).values_list("provider_message_id", "id")
        )
        matched |= {pk: by_send_id[sid] for pk, sid in wanted.items() if sid in by_send_id}
    return matched


def _send_id(row: SimpleNamespace) -> str:
    if row.provider == ProviderEvent.Provider.SENDGRID:
        return sendgrid_events.send_id(row.provider_message_id)
    return row.provider_message_id


def _process_hits(rows: list[SimpleNamespace], *, now: datetime) -> ProcessResult:
    """Pending pixel opens and redirect clicks."""
    messages = _messages_locked(row.message_id for row in rows)
    occurrences = []
    kept = []
    for row in rows:
        message = messages.get(row.message_id)
        if message is None:
            continue  # deleted meanwhile (the cascade takes the row too)
        status = S.OPENED if row.kind == K.OPEN else S.CLICKED
        occurrence = _Occurrence(
            message=message,
            occurred_at=row.occurred_at,
            source=row.source,
            outcome=Outcome(engagement=row.kind, status=status, url=row.url),
            channel=message.channel,
            machine_reason=row.machine_reason,
            link_id=row.link_id,
        )
        occurrences.append(occurrence)
        kept.append((row, occurrence))
    result = _apply(occurrences, now=now)
    # Marked processed, with the flags found now (clicks too soon after
    # delivery; the rest were set when the request came in).
    flags = {row.id: o.machine_reason[:200] for row, o in kept}
    _staged_update(
        Engagement,
        "engagement_done",
        (("processed_at", "timestamptz"), ("machine", "boolean"), ("machine_reason", "text"),
         ("error", "text")),
        [(row.id, now, bool(flags.get(row.id, row.machine_reason)),
          flags.get(row.id, row.machine_reason),
          "" if row.id in flags else "message deleted")
         for row in rows],
    )  # fmt: skip
    result.hits = len(rows)
    return result


def _apply(occurrences: list[_Occurrence], *, now: datetime) -> ProcessResult:
    """The effects of a batch, in one lock order for every processor:
    messages (id order), suppression list (address order), customers and
    their events (ingest's own order)."""
    result = ProcessResult()
    occurrences.sort(key=lambda o: o.occurred_at)
    _flag_machines(occurrences)
    human = [o for o in occurrences if not o.machine_reason]
    result.machine = len(occurrences) - len(human)
    result.messages_moved = _advance_messages(human, now=now)
    result.suppressed = _suppress(occurrences, now=now)
    result.events_recorded = _record_events(human, now=now)
    return result


def _flag_machines(occurrences: list[_Occurrence]) -> None:
    """Opens and clicks a scanner's user agent made, and clicks that came too
    soon after delivery (the delivery time as stored, or as reported earlier
    in this same batch, else the send time), are machine engagement."""
    delivered: dict[int, datetime] = {}
    for o in occurrences:  # in time order
        if o.message is None or o.machine_reason:
            continue
        kind = o.outcome.engagement
        if kind == K.DELIVERED:
            delivered.setdefault(o.message.id, o.occurred_at)
        if kind not in (K.OPEN, K.CLICK):
            continue
        marker = scanner_agent(o.outcome.user_agent)
        if marker is not None:
            o.machine_reason = f"scanner user agent ({marker})"
        elif kind == K.CLICK:
            reference = o.message.delivered_at or delivered.get(o.message.id) or o.message.sent_at
            o.machine_reason = click_too_soon(clicked_at=o.occurred_at, delivered_at=reference)


def _advance_messages(occurrences: Sequence[_Occurrence], *, now: datetime) -> int:
    """Move each message through its occurrences in time order, as far as the
    transition table allows (never backwards), and fill each timestamp the
    first time its state is reached; one statement for the batch."""
    changes: dict[int, dict] = {}
    for o in occurrences:
        message, outcome = o.message, o.outcome
        if message is None or outcome.status is None:
            continue
        change = changes.setdefault(message.id, {"old": message.status, "new": message.status})
        if can_move(change["new"], outcome.status):
            change["new"] = outcome.status
        at = o.occurred_at
        if outcome.engagement == K.DELIVERED:
            change.setdefault("delivered_at", at)
        elif outcome.engagement in (K.OPEN, K.CLICK):
            change.setdefault("opened_at", at)  # a click is an open, too
            if outcome.engagement == K.CLICK:
                change.setdefault("clicked_at", at)
        elif outcome.status in (S.BOUNCED, S.FAILED):
            change.setdefault("failed_at", at)
            change.setdefault("error", outcome.detail)
    by_id = {o.message.id: o.message for o in occurrences if o.message is not None}
    changes = {
        mid: change for mid, change in changes.items() if _changes_something(by_id[mid], change)
    }
    if not changes:
        return 0
    db_datetime = datetime_adapter()

    def stamp(change: dict, name: str):
        value = change.get(name)
        return db_datetime(value) if value is not None else None

    table = Message._meta.db_table
    staged_write(
        "message_engagement",
        (("id", "bigint"), ("old", "text"), ("new", "text"), ("delivered_at", "timestamptz"),
         ("opened_at", "timestamptz"), ("clicked_at", "timestamptz"),
         ("failed_at", "timestamptz"), ("error", "text"), ("updated_at", "timestamptz")),
        [(mid, c["old"], c["new"], stamp(c, "delivered_at"), stamp(c, "opened_at"),
          stamp(c, "clicked_at"), stamp(c, "failed_at"), c.get("error", ""), db_datetime(now))
         for mid, c in sorted(changes.items())],
        # The status is set only if it is still what the move started from
        # (compare-and-set); the timestamps are filled once, whatever it is.
        f"UPDATE {table} AS m SET "  # noqa: S608
        "status = CASE WHEN m.status = s.old THEN s.new ELSE m.status END, "
        "delivered_at = COALESCE(m.delivered_at, s.delivered_at), "
        "opened_at = COALESCE(m.opened_at, s.opened_at), "
        "clicked_at = COALESCE(m.clicked_at, s.clicked_at), "
        "failed_at = COALESCE(m.failed_at, s.failed_at), "
        "error = CASE WHEN m.error = '' AND m.status = s.old THEN s.error ELSE m.error END, "
        "updated_at = s.updated_at "
        "FROM {staged} AS s WHERE m.id = s.id",
    )  # fmt: skip
    return sum(1 for c in changes.values() if c["new"] != c["old"])


def _changes_something(message: _Msg, change: dict) -> bool:
    """Whether the UPDATE below would change the message (read under its row
    lock): a status move, or a timestamp or error filled for the first time.
    Most engagement of a message after its first changes nothing."""
    if change["new"] != change["old"]:
        return True
    if any(name in change and getattr(message, name) is None for name in _STAMPS):
        return True
    return "error" in change and message.error == ""


_STAMPS = ("delivered_at", "opened_at", "clicked_at", "failed_at")


def _suppress(occurrences: Sequence[_Occurrence], *, now: datetime) -> int:
    """Suppress the addresses that bounced, were dropped, complained or
    unsubscribed (matched to a message or not: the address is in the event);
    an unsubscribe of a known customer also revokes their consent (messaging's
    `unsubscribe`); a resubscribe through the provider lifts the unsubscribe it
    reported. An address that cannot be one is logged and skipped."""
    wanted: dict[tuple[str, str], _Occurrence] = {}
    for o in occurrences:
        if not (o.outcome.suppress or o.outcome.lift_unsubscribe) or not o.address:
            continue
        try:
            address = normalize_address(o.channel, o.address)
        except ValueError as exc:
            logger.warning("tracking: %s event for %r not acted on: %s", o.source, o.address, exc)
            continue
        wanted[(o.channel, address)] = o  # in time order: the latest wins
    # An address already suppressed needs nothing more for a bounce, a drop or
    # a complaint (SendGrid drops every later message to a bounced address):
    # one query instead of a service call each. Unsubscribes and resubscribes
    # always go through, for their consent records.
    active = _actively_suppressed(
        [
            key
            for key, o in wanted.items()
            if not (o.outcome.revokes_consent or o.outcome.lift_unsubscribe)
        ]
    )
    plain = []
    unsubscribes = []
    for (channel, address), o in sorted(wanted.items()):
        if (channel, address) in active:
            continue
        if o.outcome.lift_unsubscribe:
            _lift_unsubscribe(channel, address, o, now=now)
        elif o.outcome.revokes_consent and o.message is not None:
            unsubscribes.append((channel, address, o))
        else:
            plain.append((channel, address, o))
    consent.unsubscribe_many(
        [
            consent.Unsubscribe(
                customer_id=o.message.customer_id,
                channel=channel,
                address=address,
                wording=f"Unsubscribed through {o.source} ({o.outcome.detail or 'unsubscribe'}).",
            )
            for channel, address, o in unsubscribes
        ],
        source=ConsentRecord.Source.PROVIDER,
        now=now,
    )
    if len(plain) == 1:
        channel, address, o = plain[0]
        consent.suppression_add(
            channel=channel,
            address=address,
            reason=o.outcome.suppress,
            source=f"{o.source} {o.outcome.engagement or 'event'}",
            now=now,
            detail=o.outcome.detail,
        )
    elif plain:
        consent.suppressions_add(
            [
                consent.Suppress(
                    channel, address, o.outcome.suppress,
                    f"{o.source} {o.outcome.engagement or 'event'}", o.outcome.detail,
                )
                for channel, address, o in plain
            ],
            now=now,
        )  # fmt: skip
    return len(unsubscribes) + len(plain)


def _actively_suppressed(keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    rows = Suppression.objects.filter(
        lifted_at__isnull=True, address__in={address for _, address in keys}
    ).values_list("channel", "address")
    return set(rows) & set(keys)


# Suppression sources of an unsubscribe a provider reported.
_PROVIDER_SOURCES = (ConsentRecord.Source.PROVIDER, "sendgrid")


def _lift_unsubscribe(channel: str, address: str, o: _Occurrence, *, now: datetime) -> None:
    """A resubscribe through the provider lifts only an unsubscribe the
    provider reported (never a bounce, a complaint, a manual block nor an
    unsubscribe the customer made through our own link)."""
    active = Suppression.objects.filter(
        channel=channel, address=address, lifted_at__isnull=True
    ).first()
    if active is None or active.reason != Suppression.Reason.UNSUBSCRIBE:
        return
    if not active.source.startswith(_PROVIDER_SOURCES):
        return
    consent.suppression_lift(channel=channel, address=address, now=now, by=o.source)
    if o.message is not None:
        consent.consent_record(
            customer=o.message.customer_id,
            channel=channel,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.PROVIDER,
            recorded_at=o.occurred_at,
            wording=f"Resubscribed through {o.source}.",
        )


def _record_events(occurrences: Sequence[_Occurrence], *, now: datetime) -> int:
    """A customer event per human engagement of a real (not test) message.
    The messageId makes each state one event per message (the first open,
    the first click of each link, ...) whichever source reported it first."""
    calls = []
    for o in occurrences:
        message, kind = o.message, o.outcome.engagement
        if message is None or message.is_test or kind is None:
            continue
        names = EMAIL_EVENTS if message.channel == Channel.EMAIL else SMS_EVENTS
        name = names.get(kind)
        if name is None:
            continue
        properties = {
            "message_id": message.id,
            "channel": message.channel,
            "journey": message.journey,
            "node_id": message.node_id,
            "template": message.template or "",
            "source": o.source,
        }
        key = _EVENT_KEYS.get(kind, kind)
        if kind == K.CLICK:
            properties["url"] = o.outcome.url
            key = f"clicked:{hashlib.sha256(o.outcome.url.encode()).hexdigest()[:16]}"
        elif kind == K.RESUBSCRIBE:
            key = f"resubscribed:{o.provider_event_id}"
        if o.outcome.detail and kind in (K.BOUNCE, K.DROPPED, K.FAILED):
            properties["reason"] = o.outcome.detail
        calls.append(
            TrackIn(
                userId=message.external_id,
                event=name,
                properties=properties,
                timestamp=o.occurred_at,
                messageId=f"msg:{message.id}:{key}",
            )
        )
    if not calls:
        return 0
    return ingest(calls, received_at=now, source="api").events_stored


# One event per message for these states, whichever source reports them.
_EVENT_KEYS = {
    K.DELIVERED: "delivered",
    K.OPEN: "opened",
    K.BOUNCE: "bounced",
    K.DROPPED: "bounced",
    K.FAILED: "failed",
    K.COMPLAINT: "complained",
    K.UNSUBSCRIBE: "unsubscribed",
}


def _staged_update(model, name: str, columns: Sequence[tuple[str, str]], rows: list) -> None:
    """Set `columns` of `model`'s rows from `(id, *values)`."""
    if not rows:
        return
    db_datetime = datetime_adapter()
    converters = [db_datetime if kind == "timestamptz" else (lambda v: v) for _, kind in columns]
    staged = [
        (
            pk,
            *(
                None if v is None else convert(v)
                for v, convert in zip(values, converters, strict=True)
            ),
        )
        for pk, *values in rows
    ]
    assignments = ", ".join(f"{column} = s.{column}" for column, _ in columns)
    staged_write(
        name,
        [("id", "bigint"), *columns],
        staged,
        f"UPDATE {model._meta.db_table} AS t SET {assignments} "  # noqa: S608
        "FROM {staged} AS s WHERE t.id = s.id",
    )


# --- inbound SMS --------------------------------------------------------------


def inbound_sms_receive(*, text: twilio_events.InboundText, now: datetime) -> InboundSms:
    """Store and act on an inbound text (Twilio's posted parameters, read by
    `twilio_events.inbound_text`). Keywords
    act at once: STOP-type opt the number out (suppression + a consent
    record per customer with that number), START/YES/UNSTOP opt it back in,
    HELP answers with SMS_HELP_TEXT. Other text is offered to the listeners
    (`hooks.on_inbound_sms`: an NPS score), else kept as free text, flagged
    for review when it reads like a request to stop. A repeated MessageSid
    (Twilio retrying) returns the stored message and does nothing again."""
    existing = InboundSms.objects.filter(message_sid=text.sid).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return _inbound_act(text, now=now)
    except IntegrityError:
        # The same message delivered twice at once: the other one acted.
        return InboundSms.objects.get(message_sid=text.sid)


def _inbound_act(text: twilio_events.InboundText, *, now: datetime) -> InboundSms:
    sid, number, body = text.sid, text.number, text.body
    customers = list(Customer.objects.filter(phone=number).order_by("id"))
    kind = twilio_events.keyword(body)
    if kind in (InboundSms.Kind.OPT_OUT, InboundSms.Kind.OPT_IN) and not _is_phone(number):
        # A keyword from a sender that is no phone number (an alphanumeric or
        # channel-prefixed sender) can suppress nothing: kept as text, for review.
        kind = None
    inbound = InboundSms.objects.create(
        message_sid=sid,
        from_number=number,
        to_number=text.to,
        body=body,
        customer=customers[0] if customers else None,
        kind=kind or InboundSms.Kind.TEXT,
        received_at=now,
        payload=text.params,
    )
    event = None
    if kind == InboundSms.Kind.OPT_OUT:
        sms_opt_out(number, customers, now=now, source=ConsentRecord.Source.SMS_KEYWORD,
                    wording=body)  # fmt: skip
        event = SMS_OPTED_OUT
    elif kind == InboundSms.Kind.OPT_IN:
        sms_opt_in(number, customers, now=now, wording=body)
        event = SMS_OPTED_IN
    elif kind == InboundSms.Kind.HELP:
        inbound.reply = settings.SMS_HELP_TEXT
    else:
        taken = hooks.offer(inbound=inbound, customer_ids=[c.pk for c in customers], now=now)
        if taken is not None:
            inbound.kind, inbound.handled_by, inbound.reply = (
                InboundSms.Kind.REPLY,
                taken[0][:200],
                taken[1].text,
            )
        # Even a reply a listener took ("6, and stop texting me" as a survey
        # comment) is flagged: a request to stop is never left unread.
        inbound.needs_review = twilio_events.asks_to_stop(body)
        event = SMS_REPLIED
    inbound.save(update_fields=["kind", "handled_by", "reply", "needs_review"])
    if event and customers:
        properties = {"inbound_sms_id": inbound.pk, "kind": inbound.kind}
        if event == SMS_REPLIED:
            properties |= {"text": body[:500], "handled_by": inbound.handled_by}
        ingest(
            [
                TrackIn(
                    userId=c.external_id,
                    event=event,
                    properties=properties,
                    timestamp=now,
                    messageId=f"sms-in:{sid}:{c.pk}",
                )
                for c in customers
            ],
            received_at=now,
            source="api",
        )
    return inbound


def _is_phone(number: str) -> bool:
    try:
        normalize_address(Channel.SMS, number)
    except ValueError:
        return False
    return True


def sms_opt_out(
    number: str, customers: Sequence[Customer], *, now: datetime, source: str, wording: str
) -> None:
    """Suppress `number` for SMS (everyone, whatever customer it belongs to)
    and record the revocation in each customer's consent ledger."""
    consent.suppression_add(
        channel=Channel.SMS,
        address=number,
        reason=Suppression.Reason.SMS_OPT_OUT,
        source=source,
        now=now,
        detail=wording[:500],
    )
    for customer in customers:
        consent.consent_record(
            customer=customer.pk,
            channel=Channel.SMS,
            status=ConsentRecord.Status.REVOKED,
            source=source,
            recorded_at=now,
            wording=wording[:500],
        )


def sms_opt_in(number: str, customers: Sequence[Customer], *, now: datetime, wording: str) -> None:
    """Lift an SMS opt-out of `number` (only an opt-out: never a block added
    for another reason) and record consent granted for each customer."""
    active = Suppression.objects.filter(
        channel=Channel.SMS, address=number, lifted_at__isnull=True
    ).first()
    if active is not None and active.reason == Suppression.Reason.SMS_OPT_OUT:
        consent.suppression_lift(channel=Channel.SMS, address=number, now=now, by="sms_keyword")
    for customer in customers:
        consent.consent_record(
            customer=customer.pk,
            channel=Channel.SMS,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.SMS_KEYWORD,
            recorded_at=now,
            wording=wording[:500],
        )


def inbound_sms_opt_out(inbound: InboundSms, *, now: datetime, by: str) -> None:
    """A person read a free-text request to stop and acts on it (the admin's
    action): the number is opted out as if it had sent STOP, and the message
    is marked reviewed."""
    with transaction.atomic():
        customers = list(Customer.objects.filter(phone=inbound.from_number).order_by("id"))
        sms_opt_out(
            inbound.from_number,
            customers,
            now=now,
            source=ConsentRecord.Source.ADMIN,
            wording=f"Inbound SMS #{inbound.pk} read by {by}: {inbound.body}",
        )
        inbound_sms_mark_reviewed([inbound.pk], now=now, by=by)


def inbound_sms_mark_reviewed(ids: Sequence[int], *, now: datetime, by: str) -> int:
    return InboundSms.objects.filter(pk__in=ids, reviewed_at__isnull=True).update(
        reviewed_at=now, reviewed_by=by[:150]
    )
