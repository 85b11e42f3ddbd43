"""The batch processor: what the pixel, the redirect and the providers'
webhooks stored, acted on in bulk.

`tracking_process`, run by the `tracking` queue (on beat every few seconds
and after each webhook), claims pending rows in batches and, per batch, in
one transaction: matches provider events to messages (our custom arg, then
the provider's message id; unmatched ones are kept), flags clicks that came
too soon after delivery, moves each message forward only (through
`apps.messaging.transitions`) with its timestamps, suppresses the addresses
that bounced, complained or unsubscribed, and records a customer `Event` for
each human engagement through `ingest` (source "api", so triggers hear it).
Machine engagement is kept with its reason and does none of that.
"""

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace

from django.db import connection, transaction
from django.db.models.expressions import RawSQL

from apps.core.bulk import staged_write, values_subquery
from apps.messaging.models import Channel, Message

from .. import sendgrid_events, twilio_events
from ..events import Outcome
from ..models import Engagement, ProviderEvent
from . import effects
from .effects import MessageRow, Occurrence
from .hits import MAX_USER_AGENT

logger = logging.getLogger(__name__)

K = Engagement.Kind
S = Message.Status
# Rows per batch (one transaction). Bigger batches fold more of a message's
# events into one update of it (a send's events come in close together):
# 5,000 SendGrid events cost about a third less CPU each than 1,000.
BATCH_SIZE = 5000
OUTCOMES = {
    ProviderEvent.Provider.SENDGRID: sendgrid_events.outcome,
    ProviderEvent.Provider.TWILIO: twilio_events.outcome,
}


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


# MessageRow's fields, in its order.
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


def _messages_locked(ids: Iterable[int]) -> dict[int, MessageRow]:
    """The messages, row-locked in id order (one order for every processor,
    so concurrent batches never deadlock on them)."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    rows = (
        Message.objects.filter(id__in=_ids_subquery(ids))
        .order_by("id")
        .select_for_update(of=("self",))
        .values_list(*_MSG_FIELDS)
    )
    return {row[0]: MessageRow(*row) for row in rows}


def _ids_subquery(ids: Iterable[int]) -> RawSQL:
    """`SELECT` of the given ids, for `id__in=`: one parameter (an array)
    however many, not a placeholder each."""
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])


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
    concurrently: batches are claimed with SKIP LOCKED."""
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
    Concurrent claims skip each other's rows (SKIP LOCKED). (Locking rather
    than marking here spares each row a second write: one UPDATE per row, at
    the end, sets the mark and what processing found.)

    The claim walks the pending index in id order and stops
    after `batch_size` rows. After a burst of inserts the table's statistics
    are stale (autovacuum has not analyzed it yet) and the planner would
    rather fetch and sort every pending row, for each batch; bitmap scans are
    off for this statement, so it cannot."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan TO off")
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {model._meta.db_table} "  # noqa: S608
            "WHERE processed_at IS NULL AND id > %s ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            [after, batch_size],
        )
        returned = cursor.fetchall()
        cursor.execute("SET LOCAL enable_bitmapscan TO DEFAULT")
    rows = [SimpleNamespace(**dict(zip(fields, values, strict=True))) for values in returned]
    if "payload" in fields:
        for row in rows:
            # Django has psycopg read jsonb as text (JSONField parses it).
            row.payload = json.loads(row.payload)
    return rows


def _process_provider_events(rows: list[SimpleNamespace], *, now: datetime) -> ProcessResult:
    matched = _match(rows)
    messages = _messages_locked(matched.values())
    occurrences: list[Occurrence] = []
    for row in rows:
        message = messages.get(matched.get(row.id))
        outcome = OUTCOMES[row.provider](row)
        channel = Channel.EMAIL if row.provider == ProviderEvent.Provider.SENDGRID else Channel.SMS
        occurrences.append(
            Occurrence(
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


def _insert_engagements(occurrences: Sequence[Occurrence], *, now: datetime) -> None:
    """The engagements of provider events, written processed, in one statement."""
    if not occurrences:
        return
    names = ", ".join(name for name, _ in _ENGAGEMENT_STAGED)
    staged_write(
        "engagement",
        _ENGAGEMENT_STAGED,
        [(o.message.id, o.outcome.engagement, o.source, o.occurred_at, now,
          bool(o.machine_reason), o.machine_reason[:200], o.outcome.url,
          o.outcome.user_agent[:MAX_USER_AGENT], o.provider_event_id, now)
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
        occurrence = Occurrence(
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


def _apply(occurrences: list[Occurrence], *, now: datetime) -> ProcessResult:
    """The effects of a batch, in one lock order for every processor:
    messages (id order), suppression list (address order), customers and
    their events (ingest's own order)."""
    result = ProcessResult()
    occurrences.sort(key=lambda o: o.occurred_at)
    effects.flag_machines(occurrences)
    human = [o for o in occurrences if not o.machine_reason]
    result.machine = len(occurrences) - len(human)
    result.messages_moved = effects.advance_messages(human, now=now)
    result.suppressed = effects.suppress_addresses(occurrences, now=now)
    result.events_recorded = effects.record_events(human, now=now)
    return result


def _staged_update(model, name: str, columns: Sequence[tuple[str, str]], rows: list) -> None:
    """Set `columns` of `model`'s rows from `(id, *values)`."""
    if not rows:
        return
    assignments = ", ".join(f"{column} = s.{column}" for column, _ in columns)
    staged_write(
        name,
        [("id", "bigint"), *columns],
        rows,
        f"UPDATE {model._meta.db_table} AS t SET {assignments} "  # noqa: S608
        "FROM {staged} AS s WHERE t.id = s.id",
    )
