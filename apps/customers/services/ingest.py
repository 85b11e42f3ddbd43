"""Writes of usage data: `ingest`, the one write path for Segment-spec calls.

The HTTP API, the importer, the demo seeder and Tenure's own events all go
through it, so `EventStat` is exact by construction (it is updated in the same
transaction, from the rows that were actually inserted, never from the rows
that were merely offered).
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db import IntegrityError, OperationalError, transaction

from apps.core.bulk import staged_write

from .. import hooks
from ..models import CONTACT_FIELDS, Customer, Event, EventStat
from ..schemas import Call, GroupIn, IdentifyIn, TrackIn
from ..validation import is_timezone
from .accounts import accounts_group
from .profiles import Profile, Raced, profiles_locked, profiles_merge, profiles_traits_load
from .touch import TOUCH_STAMP

# How many times a batch starts over after a concurrent writer changed the
# profiles it depends on (a merge racing another, a deadlock detected).
_ATTEMPTS = 5


@dataclass
class IngestResult:
    customers_created: int = 0
    customers_updated: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    profiles_merged: int = 0
    event_ids: list[int] = field(default_factory=list)

    def add(self, other: "IngestResult") -> None:
        """Add up the counts (event ids belong to one call and are not kept)."""
        self.customers_created += other.customers_created
        self.customers_updated += other.customers_updated
        self.events_stored += other.events_stored
        self.events_duplicate += other.events_duplicate
        self.profiles_merged += other.profiles_merged


def ingest(calls: Sequence[Call], *, received_at: datetime, source: str = "api") -> IngestResult:
    """Store validated calls in one transaction.

    The profiles the calls name are locked in one global order and created
    where missing; calls that link an anonymous visitor (or an alias's
    previous id) to a customer promote or merge the visitor's profile first
    (`profiles.py`), so every call of the batch lands on the customer it
    belongs to. Then identify traits merge in call order and only customers
    that really changed are written; events (track, page, screen) are inserted
    with `ON CONFLICT (message_id) DO NOTHING` (a repeated messageId stores
    nothing) and the per-customer `EventStat` rows are upserted from what was
    inserted; group calls upsert accounts and memberships.

    Once the transaction commits, the listeners in `hooks` hear of the stored
    events and changed customers, and of the `source` ("api", "import",
    "demo"): a listener may ignore backfills, as event-triggered journeys do.
    Durable work (a row) is written by its in-transaction listeners, before
    the commit. A batch that raced a concurrent merge starts over.
    """
    if not calls:
        return IngestResult()
    for attempt in range(_ATTEMPTS):
        try:
            return _ingest_once(calls, received_at, source)
        except (Raced, IntegrityError, OperationalError) as exc:
            if attempt == _ATTEMPTS - 1 or not _is_race(exc):
                raise
    raise AssertionError("unreachable")


def _is_race(exc: Exception) -> bool:
    """Whether starting over may succeed: our own race signal, a unique
    violation on a customer's id (a concurrent writer created it first), or
    a deadlock PostgreSQL broke."""
    if isinstance(exc, Raced):
        return True
    code = getattr(getattr(exc, "__cause__", None), "sqlstate", None)
    if isinstance(exc, IntegrityError):
        return code == "23505" and "customer_" in str(exc)
    return code in ("40P01", "40001")


def _ingest_once(calls: Sequence[Call], received_at: datetime, source: str) -> IngestResult:
    result = IngestResult()
    with transaction.atomic():
        found = profiles_locked(calls, received_at=received_at)
        fills = [_context_fill(c) for c in calls]
        profiles_traits_load(_needing_traits(calls, found.targets, fills))
        merged_changed = profiles_merge(found.merges, now=received_at)
        result.profiles_merged = len(found.merges)
        events = [
            (c, t) for c, t in zip(calls, found.targets, strict=True) if isinstance(c, TrackIn)
        ]
        with_events: set[int] = set()
        if events:
            result.event_ids, rows = _insert_events(events, received_at)
            result.events_stored = len(rows)
            result.events_duplicate = len(events) - len(rows)
            _upsert_stats(rows)
            with_events = {row[0] for row in rows}
        changed = _apply_identities(
            calls,
            found.targets,
            received_at,
            fills=fills,
            dirty=merged_changed,
            with_events=with_events,
        )
        result.customers_created = len(found.created)
        result.customers_updated = len(changed - found.created)
        groups = [
            (c, t.pk) for c, t in zip(calls, found.targets, strict=True) if isinstance(c, GroupIn)
        ]
        if groups:
            accounts_group(groups, now=received_at)
        changed_ids = sorted(changed)
        hooks.notify_in_transaction(list(result.event_ids), changed_ids, received_at, source)
        transaction.on_commit(
            partial(hooks.notify, list(result.event_ids), changed_ids, received_at, source)
        )
    return result


def _needing_traits(
    calls: Sequence[Call], targets: Sequence[Profile], fills: Sequence[dict[str, str]]
) -> list[Profile]:
    """The customers whose traits this batch may change: those identified
    with traits, and those whose empty contact columns an SDK's context fills."""
    return [
        t
        for c, t, fill in zip(calls, targets, fills, strict=True)
        if (isinstance(c, IdentifyIn) and c.traits) or any(not getattr(t, f) for f in fill)
    ]


def _context_fill(call: Call) -> dict[str, str]:
    """The contact columns an SDK's context can fill when the customer has
    none: its `timezone` (when an IANA zone) and `locale`."""
    context = call.context
    if not context:
        return {}
    fills = {}
    zone = context.get("timezone")
    if isinstance(zone, str) and is_timezone(zone):
        fills["timezone"] = zone
    locale = context.get("locale")
    if isinstance(locale, str) and 0 < len(locale) <= _LOCALE_MAX:
        fills["locale"] = locale
    return fills


_LOCALE_MAX = Customer._meta.get_field("locale").max_length


def _apply_identities(
    calls: Sequence[Call],
    targets: Sequence[Profile],
    received_at: datetime,
    *,
    fills: Sequence[dict[str, str]],
    dirty: set[int],
    with_events: set[int],
) -> set[int]:
    """Merge traits and move `last_seen_at` forward, and write the customers
    in at most two statements: those whose traits or contact columns changed
    (or a merge changed: `dirty`), and the others that were seen later or got
    new events (`with_events`), which a segment refresh must see again: one
    UPDATE stamps them all, where a separate touch used to update many of
    the same rows twice. Returns the ids whose traits or contact columns
    changed (a later `last_seen_at` alone is not an update)."""
    seen_changed: dict[int, Profile] = {}
    traits_changed: dict[int, Profile] = {t.pk: t for t in targets if t.pk in dirty}
    for call, customer, fill in zip(calls, targets, fills, strict=True):
        seen = call.timestamp or received_at
        if customer.last_seen_at is None or seen > customer.last_seen_at:
            customer.last_seen_at = seen
            seen_changed[customer.pk] = customer
        update = call.traits if isinstance(call, IdentifyIn) else {}
        filled = {
            column: value
            for column, value in fill.items()
            if not getattr(customer, column) and column not in update
        }
        if update or filled:
            # Traits an older version stored as something else than an object
            # (a list, a text) are replaced: they cannot be merged into.
            stored = customer.traits if isinstance(customer.traits, dict) else {}
            merged = {**stored, **filled, **update}
            contact = {c: v or "" for c, v in {**filled, **update}.items() if c in CONTACT_FIELDS}
            if merged != customer.traits or any(
                getattr(customer, c) != v for c, v in contact.items()
            ):
                customer.traits = merged
                for column, value in contact.items():
                    setattr(customer, column, value)
                traits_changed[customer.pk] = customer
    if traits_changed:
        _staged_update(
            "customer_traits",
            [
                (c.pk, json.dumps(c.traits), *(getattr(c, f) for f in CONTACT_FIELDS),
                 c.last_seen_at, received_at)
                for c in traits_changed.values()
            ],
            (("traits", "jsonb"), *((f, "text") for f in CONTACT_FIELDS),
             ("last_seen_at", "timestamptz"), ("updated_at", "timestamptz")),
        )  # fmt: skip
    by_pk = {t.pk: t for t in targets}
    seen_only = (seen_changed.keys() | with_events) - traits_changed.keys()
    if seen_only:
        _staged_update(
            "customer_seen",
            [(pk, by_pk[pk].last_seen_at, received_at) for pk in sorted(seen_only)],
            (("last_seen_at", "timestamptz"), ("updated_at", "timestamptz")),
        )
    return set(traits_changed)


def _staged_update(name: str, rows: list[tuple], columns: Sequence[tuple[str, str]]) -> None:
    """Set `columns` (name, type) of customers from rows `(id, *values)`, and
    stamp them as touched."""
    table = Customer._meta.db_table
    assignments = ", ".join(f"{column} = s.{column}" for column, _ in columns)
    staged_write(
        name,
        [("id", "bigint"), *columns],
        rows,
        f"UPDATE {table} AS c SET {assignments}, touched_seq = {TOUCH_STAMP} "  # noqa: S608
        # The ids again as an array: probes by primary key (see staged_write).
        "FROM {staged} AS s WHERE c.id = s.id AND c.id = ANY(%s::bigint[])",
        [[row[0] for row in rows]],
    )


_EventRow = tuple[int, str, datetime]  # customer_id, name, occurred_at
_EVENT_COLUMNS = (
    ("customer_id", "bigint"),
    ("name", "text"),
    ("properties", "jsonb"),
    ("context", "jsonb"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("message_id", "text"),
)


def _insert_events(
    events: Sequence[tuple[TrackIn, Profile]], received_at: datetime
) -> tuple[list[int], list[_EventRow]]:
    """Insert the events, skipping message ids already stored (earlier in this
    batch or in the database). Returns the new ids and the rows inserted."""
    seen: set[str] = set()
    staged: list[tuple] = []
    rows: list[_EventRow] = []
    by_message_id: dict[str, _EventRow] = {}
    for t, customer in events:
        if t.message_id is not None:
            if t.message_id in seen:
                continue
            seen.add(t.message_id)
        occurred_at = t.timestamp or received_at
        row = (customer.pk, t.event, occurred_at)
        if t.message_id is None:
            rows.append(row)  # nothing to conflict with: always inserted
        else:
            by_message_id[t.message_id] = row
        staged.append(
            (
                row[0],
                t.event,
                json.dumps(t.properties),
                json.dumps(t.context) if t.context else None,
                occurred_at,
                received_at,
                t.message_id,
            )
        )
    if not staged:
        return [], []
    returned = staged_write(
        "event",
        _EVENT_COLUMNS,
        staged,
        f"INSERT INTO {Event._meta.db_table} "  # noqa: S608
        "(customer_id, name, properties, context, occurred_at, received_at, message_id) "
        "SELECT customer_id, name, properties, context, occurred_at, received_at, message_id "
        # In message id order: writers that share ids wait for each other in one
        # global order, never in a cycle.
        "FROM {staged} WHERE true ORDER BY message_id "
        "ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
    )
    rows += [by_message_id[message_id] for _, message_id in returned if message_id is not None]
    return [event_id for event_id, _ in returned], rows


_STAT_COLUMNS = (
    ("customer_id", "bigint"),
    ("name", "text"),
    ("count", "bigint"),
    ("first_at", "timestamptz"),
    ("last_at", "timestamptz"),
)


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
    table = EventStat._meta.db_table
    staged_write(
        "eventstat",
        _STAT_COLUMNS,
        # One lock order for every writer, so concurrent batches cannot deadlock.
        [
            (cid, name, count, first, last)
            for (cid, name), (count, first, last) in sorted(stats.items())
        ],
        f"INSERT INTO {table} (customer_id, name, count, first_at, last_at) "  # noqa: S608
        "SELECT customer_id, name, count, first_at, last_at FROM {staged} WHERE true "
        "ORDER BY customer_id, name "
        "ON CONFLICT (customer_id, name) DO UPDATE SET "
        f"count = {table}.count + excluded.count, "
        f"first_at = LEAST({table}.first_at, excluded.first_at), "
        f"last_at = GREATEST({table}.last_at, excluded.last_at)",
    )
