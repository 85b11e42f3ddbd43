"""Writes to customers and their usage data.

`ingest` is the one write path for identify/track calls: the HTTP API, the
importer and the demo seeder all go through it, so `EventStat` is exact by
construction (it is updated in the same transaction, from the rows that were
actually inserted, never from the rows that were merely offered).
"""

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

from django.db import connection, transaction
from django.utils import timezone

from .models import CONTACT_FIELDS, ApiKey, Customer, Event, EventStat
from .schemas import Call, IdentifyIn, TrackIn

# Rows per INSERT statement: well under both PostgreSQL's 65,535 and SQLite's
# 32,766 bound parameters.
SQL_CHUNK = 1000
API_KEY_PREFIX = "tk_"


@dataclass
class IngestResult:
    customers_created: int = 0
    customers_updated: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    event_ids: list[int] = field(default_factory=list)

    def add(self, other: "IngestResult") -> None:
        self.customers_created += other.customers_created
        self.customers_updated += other.customers_updated
        self.events_stored += other.events_stored
        self.events_duplicate += other.events_duplicate
        self.event_ids.extend(other.event_ids)


def ingest(calls: Sequence[Call], *, received_at: datetime) -> IngestResult:
    """Store validated identify/track calls in one transaction.

    Customers are upserted and locked in id order (so concurrent batches cannot
    deadlock), identify traits merge in call order, events are inserted with
    `ON CONFLICT (message_id) DO NOTHING` (a repeated messageId stores nothing)
    and the per-customer `EventStat` rows are upserted from what was inserted.
    """
    result = IngestResult()
    if not calls:
        return result
    with transaction.atomic():
        customers, result.customers_created = _customers_locked(calls)
        result.customers_updated = _apply_identities(calls, customers, received_at)
        tracks = [c for c in calls if isinstance(c, TrackIn)]
        if tracks:
            result.event_ids, rows = _insert_events(tracks, customers, received_at)
            result.events_stored = len(rows)
            result.events_duplicate = len(tracks) - len(rows)
            _upsert_stats(rows)
    return result


def _chunks(items: Sequence, size: int = SQL_CHUNK) -> Iterable[Sequence]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _customers_locked(calls: Sequence[Call]) -> tuple[dict[str, Customer], int]:
    """The customers named by the calls, created where missing, row-locked."""
    external_ids = sorted({c.user_id for c in calls})
    needs_traits = any(isinstance(c, IdentifyIn) for c in calls)
    fields = ["id", "external_id", "last_seen_at"]
    if needs_traits:
        fields += ["traits", *CONTACT_FIELDS]

    def load(ids: Sequence[str]) -> dict[str, Customer]:
        found: dict[str, Customer] = {}
        for chunk in _chunks(ids):
            qs = Customer.objects.filter(external_id__in=chunk).only(*fields).order_by("id")
            found.update((c.external_id, c) for c in qs.select_for_update())
        return found

    customers = load(external_ids)
    missing = [eid for eid in external_ids if eid not in customers]
    if missing:
        Customer.objects.bulk_create(
            [Customer(external_id=eid) for eid in missing],
            batch_size=SQL_CHUNK,
            ignore_conflicts=True,
        )
        customers.update(load(missing))
    return customers, len(missing)


def _apply_identities(
    calls: Sequence[Call], customers: dict[str, Customer], received_at: datetime
) -> int:
    """Merge traits and move `last_seen_at` forward; write only what changed."""
    changed: dict[int, Customer] = {}
    traits_changed = False
    for call in calls:
        customer = customers[call.user_id]
        seen = call.timestamp or received_at
        if customer.last_seen_at is None or seen > customer.last_seen_at:
            customer.last_seen_at = seen
            changed[customer.pk] = customer
        if isinstance(call, IdentifyIn) and call.traits:
            customer.traits = {**customer.traits, **call.traits}
            for column in CONTACT_FIELDS:
                if column in call.traits:
                    setattr(customer, column, call.traits[column] or "")
            changed[customer.pk] = customer
            traits_changed = True
    if changed:
        update = ["last_seen_at", "updated_at"]
        if traits_changed:
            update += ["traits", *CONTACT_FIELDS]
        now = timezone.now()
        for customer in changed.values():
            customer.updated_at = now
        Customer.objects.bulk_update(
            sorted(changed.values(), key=lambda c: c.pk), update, batch_size=500
        )
    return len(changed)


_EventRow = tuple[int, str, datetime]  # customer_id, name, occurred_at
_EVENT_FIELDS = ("customer", "name", "properties", "occurred_at", "received_at", "message_id")


def _insert_events(
    tracks: Sequence[TrackIn], customers: dict[str, Customer], received_at: datetime
) -> tuple[list[int], list[_EventRow]]:
    """Insert the events, skipping message ids already stored (earlier in this
    batch or in the database). Returns the new ids and the rows inserted."""
    fields = [Event._meta.get_field(name) for name in _EVENT_FIELDS]
    table = connection.ops.quote_name(Event._meta.db_table)
    cols = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"

    seen: set[str] = set()
    pending: list[TrackIn] = []
    for t in tracks:
        if t.message_id is not None:
            if t.message_id in seen:
                continue
            seen.add(t.message_id)
        pending.append(t)

    ids: list[int] = []
    rows: list[_EventRow] = []
    with connection.cursor() as cursor:
        for chunk in _chunks(pending):
            params: list = []
            by_message_id: dict[str, _EventRow] = {}
            for t in chunk:
                row = (customers[t.user_id].pk, t.event, t.timestamp or received_at)
                raw = (row[0], t.event, t.properties, row[2], received_at, t.message_id)
                params += [
                    f.get_db_prep_save(v, connection) for f, v in zip(fields, raw, strict=True)
                ]
                if t.message_id is None:
                    rows.append(row)  # nothing to conflict with: always inserted
                else:
                    by_message_id[t.message_id] = row
            cursor.execute(
                f"INSERT INTO {table} ({cols}) VALUES {', '.join([placeholder] * len(chunk))} "  # noqa: S608
                "ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
                params,
            )
            for event_id, message_id in cursor.fetchall():
                ids.append(event_id)
                if message_id is not None:
                    rows.append(by_message_id[message_id])
    return ids, rows


def _upsert_stats(rows: Iterable[_EventRow]) -> None:
    stats: dict[tuple[int, str], list] = {}
    for customer_id, name, occurred_at in rows:
        stat = stats.get((customer_id, name))
        if stat is None:
            stats[(customer_id, name)] = [1, occurred_at, occurred_at]
        else:
            stat[0] += 1
            stat[1] = min(stat[1], occurred_at)
            stat[2] = max(stat[2], occurred_at)
    if not stats:
        return
    at_field = EventStat._meta.get_field("first_at")
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    table = connection.ops.quote_name(EventStat._meta.db_table)
    ordered = sorted(stats.items())  # one lock order for every writer
    with connection.cursor() as cursor:
        for chunk in _chunks(ordered):
            params: list = []
            for (customer_id, name), (count, first_at, last_at) in chunk:
                params += [
                    customer_id,
                    name,
                    count,
                    at_field.get_db_prep_save(first_at, connection),
                    at_field.get_db_prep_save(last_at, connection),
                ]
            cursor.execute(
                f"INSERT INTO {table} (customer_id, name, count, first_at, last_at) "  # noqa: S608
                f"VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(chunk))} "
                "ON CONFLICT (customer_id, name) DO UPDATE SET "
                f"count = {table}.count + excluded.count, "
                f"first_at = {least}({table}.first_at, excluded.first_at), "
                f"last_at = {greatest}({table}.last_at, excluded.last_at)",
                params,
            )


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(name=name, prefix=key[:10], key_hash=ApiKey.hash(key))
    return api_key, key


def api_key_authenticate(key: str, *, now: datetime) -> ApiKey | None:
    """The live key matching `key`, or None. `last_used_at` is refreshed at most
    once a minute, so authentication is not a write on every request."""
    api_key = ApiKey.objects.filter(key_hash=ApiKey.hash(key), revoked_at__isnull=True).first()
    if api_key and (
        api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60
    ):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


def api_key_revoke(api_key: ApiKey, *, now: datetime) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
