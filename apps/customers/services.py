"""Writes to customers and their usage data.

`ingest` is the one write path for identify/track calls: the HTTP API, the
importer and the demo seeder all go through it, so `EventStat` is exact by
construction (it is updated in the same transaction, from the rows that were
actually inserted, never from the rows that were merely offered).
"""

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.db import connection, transaction

from apps.core.bulk import staged_write, values_subquery

from . import hooks
from .models import CONTACT_FIELDS, ApiKey, Customer, Event, EventStat
from .schemas import Call, IdentifyIn, TrackIn

API_KEY_PREFIX = "tk_"


@dataclass
class IngestResult:
    customers_created: int = 0
    customers_updated: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    event_ids: list[int] = field(default_factory=list)

    def add(self, other: "IngestResult") -> None:
        """Add up the counts (event ids belong to one call and are not kept)."""
        self.customers_created += other.customers_created
        self.customers_updated += other.customers_updated
        self.events_stored += other.events_stored
        self.events_duplicate += other.events_duplicate


def ingest(calls: Sequence[Call], *, received_at: datetime, source: str = "api") -> IngestResult:
    """Store validated identify/track calls in one transaction.

    Customers are upserted and locked in external id order (one global order,
    so concurrent batches cannot deadlock), identify traits merge in call order
    and only customers that really changed are written, events are inserted
    with `ON CONFLICT (message_id) DO NOTHING` (a repeated messageId stores
    nothing) and the per-customer `EventStat` rows are upserted from what was
    inserted.

    Once the transaction commits, the listeners in `hooks` hear of the stored
    events and changed customers, and of the `source` ("api", "import",
    "demo"): a listener may ignore backfills, as event-triggered journeys do.
    Durable work (a row) is written by its in-transaction listeners, before
    the commit.
    """
    result = IngestResult()
    if not calls:
        return result
    with transaction.atomic():
        customers, created = _customers_locked(calls, received_at)
        changed, stamped = _apply_identities(calls, customers, received_at)
        result.customers_created = len(created)
        result.customers_updated = len(changed - created)
        tracks = [c for c in calls if isinstance(c, TrackIn)]
        if tracks:
            result.event_ids, rows = _insert_events(tracks, customers, received_at)
            result.events_stored = len(rows)
            result.events_duplicate = len(tracks) - len(rows)
            _upsert_stats(rows)
            # Customers with new events that no update above has stamped yet
            # (new customers are stamped by the database as they are inserted).
            created_pks = {customers[eid].pk for eid in created}
            _touch({row[0] for row in rows} - stamped - created_pks)
        changed_ids = [customers[eid].pk for eid in changed]
        hooks.notify_in_transaction(list(result.event_ids), changed_ids, received_at, source)
        transaction.on_commit(
            partial(hooks.notify, list(result.event_ids), changed_ids, received_at, source)
        )
    return result


@dataclass(slots=True)
class _Known:
    """What ingest needs of a stored customer: lighter than a model instance,
    which matters when a chunk of a big import touches thousands of them."""

    pk: int
    external_id: str
    last_seen_at: datetime | None
    traits: dict = field(default_factory=dict)
    email: str = ""
    phone: str = ""
    timezone: str = ""
    locale: str = ""


def _customers_locked(
    calls: Sequence[Call], received_at: datetime
) -> tuple[dict[str, _Known], set[str]]:
    """The customers named by the calls, created where missing and row-locked,
    all in one pass in external id order; and the external ids created."""
    external_ids = sorted({c.user_id for c in calls})
    created = dict(_lock_or_create(external_ids, received_at))
    fields = ["id", "external_id", "last_seen_at"]
    if any(isinstance(c, IdentifyIn) for c in calls):
        fields += ["traits", *CONTACT_FIELDS]
    existing = [eid for eid in external_ids if eid not in created]
    rows = (
        Customer.objects.filter(external_id__in=values_subquery(existing)).values_list(*fields)
        if existing
        else []
    )
    customers = {row[1]: _Known(*row) for row in rows}
    customers.update((eid, _Known(pk, eid, None)) for eid, pk in created.items())
    return customers, set(created)


def _lock_or_create(external_ids: Sequence[str], received_at: datetime) -> list[tuple[str, int]]:
    """Create the customers that do not exist and lock those that do, in one
    statement taking rows in external id order: every writer locks in the same
    order, so concurrent batches never deadlock. PostgreSQL locks a conflicting
    row even though `WHERE false` leaves it unchanged. Returns (external_id, id)
    of the customers created, stamped with the batch's `received_at`."""
    table = Customer._meta.db_table
    return staged_write(
        "customer_new",
        (("external_id", "text"), ("created_at", "timestamptz")),
        [(eid, received_at) for eid in external_ids],
        f"INSERT INTO {table} "  # noqa: S608
        "(external_id, email, phone, timezone, locale, traits, created_at, updated_at) "
        "SELECT external_id, '', '', '', '', '{}'::jsonb, created_at, created_at "
        "FROM {staged} WHERE true ORDER BY external_id "
        "ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id "
        "WHERE false RETURNING external_id, id",
    )


def _apply_identities(
    calls: Sequence[Call], customers: dict[str, _Known], received_at: datetime
) -> tuple[set[str], set[int]]:
    """Merge traits and move `last_seen_at` forward; write only the customers
    whose row really changed. Returns the external ids whose traits or contact
    columns changed (a later `last_seen_at` alone is not an update), and the
    ids of the customers written with a touch stamp: every customer written,
    so that the customers of a batch of events are mostly stamped by the update
    that moves their `last_seen_at` anyway, not by a second one."""
    seen_changed: dict[int, _Known] = {}
    traits_changed: dict[int, _Known] = {}
    for call in calls:
        customer = customers[call.user_id]
        seen = call.timestamp or received_at
        if customer.last_seen_at is None or seen > customer.last_seen_at:
            customer.last_seen_at = seen
            seen_changed[customer.pk] = customer
        if isinstance(call, IdentifyIn) and call.traits:
            # Traits an older version stored as something else than an object
            # (a list, a text) are replaced: they cannot be merged into.
            stored = customer.traits if isinstance(customer.traits, dict) else {}
            merged = {**stored, **call.traits}
            contact = {c: call.traits[c] or "" for c in CONTACT_FIELDS if c in call.traits}
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
    seen_only = [c for pk, c in seen_changed.items() if pk not in traits_changed]
    if seen_only:
        _staged_update(
            "customer_seen",
            [(c.pk, c.last_seen_at, received_at) for c in seen_only],
            (("last_seen_at", "timestamptz"), ("updated_at", "timestamptz")),
        )
    return {c.external_id for c in traits_changed.values()}, {*seen_changed, *traits_changed}


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
        "FROM {staged} AS s WHERE c.id = s.id",
    )


# --- touch stamps ------------------------------------------------------------------
#
# Customer.touched_seq says when a customer last changed in a way segment
# conditions can see, so that a segment refresh re-evaluates only those stamped
# since its previous refresh (apps/segments). Stamps only grow, and a reader must
# know which stamps may belong to writes it cannot see yet. A stamp is the
# writing transaction's id: ids are handed out at the start, and transactions
# commit in any order, but a snapshot knows its xmin: every transaction below
# it has ended (committed and visible, or rolled back).
# The triggers of migration 0002 stamp inserted customers and changed traits,
# whoever writes them; `ingest` stamps the customers it stores events for.

# The SQL expression of the current transaction's touch stamp.
TOUCH_STAMP = "pg_current_xact_id()::text::bigint"
_TRIGGERS = ("customer_touch_insert", "customer_touch_traits")


def _touch(customer_ids: Iterable[int]) -> None:
    ids = sorted(customer_ids)
    if ids:
        staged_write(
            "customer_touch",
            (("id", "bigint"),),
            [(pk,) for pk in ids],
            f"UPDATE {Customer._meta.db_table} SET touched_seq = {TOUCH_STAMP} "  # noqa: S608
            "WHERE id IN (SELECT id FROM {staged})",
        )


def touch_watermark() -> int:
    """For a reader inside a transaction (a segment refresh): a stamp such that
    every customer stamped below it is visible to this transaction as written,
    and every later change gets a stamp at or above it. Customers stamped at or
    above an earlier watermark are the ones that may have changed since."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return cursor.fetchone()[0]


def touch_stamping_ok() -> bool:
    """Whether the stamping triggers are in place and enabled (a restore
    without them, a `DISABLE TRIGGER` left behind): without them an
    incremental refresh could miss changes, so the refresh checks first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname = ANY(%s) AND tgenabled <> 'D'",
            [Customer._meta.db_table, list(_TRIGGERS)],
        )
        return cursor.fetchone()[0] == len(_TRIGGERS)


_EventRow = tuple[int, str, datetime]  # customer_id, name, occurred_at
_EVENT_COLUMNS = (
    ("customer_id", "bigint"),
    ("name", "text"),
    ("properties", "jsonb"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("message_id", "text"),
)


def _insert_events(
    tracks: Sequence[TrackIn], customers: dict[str, _Known], received_at: datetime
) -> tuple[list[int], list[_EventRow]]:
    """Insert the events, skipping message ids already stored (earlier in this
    batch or in the database). Returns the new ids and the rows inserted."""
    seen: set[str] = set()
    staged: list[tuple] = []
    rows: list[_EventRow] = []
    by_message_id: dict[str, _EventRow] = {}
    for t in tracks:
        if t.message_id is not None:
            if t.message_id in seen:
                continue
            seen.add(t.message_id)
        occurred_at = t.timestamp or received_at
        row = (customers[t.user_id].pk, t.event, occurred_at)
        if t.message_id is None:
            rows.append(row)  # nothing to conflict with: always inserted
        else:
            by_message_id[t.message_id] = row
        staged.append(
            (
                row[0],
                t.event,
                json.dumps(t.properties),
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
        "(customer_id, name, properties, occurred_at, received_at, message_id) "
        "SELECT customer_id, name, properties, occurred_at, received_at, message_id "
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


def customer_save(customer: Customer, *, changed: Iterable[str]) -> None:
    """Save an edit made by hand: a contact column that changed is written to
    the matching trait too, as identify does."""
    for column in CONTACT_FIELDS:
        if column in changed:
            customer.traits = {**customer.traits, column: getattr(customer, column)}
    customer.save()


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
