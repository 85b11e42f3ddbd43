"""Who each call is about: user and anonymous ids resolved to customer rows,
locked, created where missing, and merged.

A call names a customer by the business's `userId`, an anonymous visitor by
the SDK's `anonymousId`, or both. A call with both, or an `alias(previousId →
userId)`, links two ids: the visitor's (or previous) profile becomes the
customer's. When the customer does not exist yet, the visitor's profile is
promoted in place (it gets the user id: nothing moves); when it does, the
profile is merged into it (`profiles_merge`): its events, stats and accounts
move, traits the customer lacks are kept, and the profile stays as a record
pointing at the customer (`merged_into`), so its ids keep resolving there.

Locks: every writer takes the rows it will write with one `SELECT … FOR
UPDATE` in id order, then the customers its merged profiles point at (rare),
then creates the missing ones. A concurrent writer that created a profile
between our read and our insert makes the insert skip it; we then lock it as
found. What cannot be settled that way (a visitor created as another's
anonymous id meanwhile) raises `Raced`, and `ingest` starts over.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

from apps.core.bulk import staged_write

from .. import hooks
from ..models import CONTACT_FIELDS, AccountMembership, Customer, Event, EventStat
from ..schemas import AliasIn, Call
from .touch import TOUCH_STAMP


class Raced(Exception):
    """Another writer changed a profile this call depends on between our read
    and our write: the ingest starts over (its transaction rolled back)."""


@dataclass(slots=True)
class Profile:
    """What ingest needs of a customer row: lighter than a model instance,
    which matters when a chunk of a big import touches thousands of them."""

    pk: int
    external_id: str | None
    anonymous_id: str | None
    merged_into_id: int | None
    last_seen_at: datetime | None
    email: str = ""
    phone: str = ""
    timezone: str = ""
    locale: str = ""
    # None until read (`profiles_traits_load`): most batches of events never
    # need a customer's traits, and reading them was a third of the lock's cost.
    traits: dict | None = None


_FIELDS = ("id", "external_id", "anonymous_id", "merged_into_id", "last_seen_at", *CONTACT_FIELDS)
_TABLE = Customer._meta.db_table
_TRAITS = Customer._meta.get_field("traits")


@dataclass
class Profiles:
    """The outcome for one batch: the customer row each call writes to (by
    position), the rows created, and what changed in identities."""

    targets: list[Profile]
    created: set[int]
    merges: list[tuple[Profile, Profile]]


def profiles_locked(calls: Sequence[Call], *, received_at: datetime) -> Profiles:
    """Resolve, lock and (where missing) create the profiles the calls name;
    promote and merge the profiles the calls link. Inside a transaction."""
    links = _links(calls)
    needed = {c.user_id for c in calls if c.user_id is not None}  # AliasIn's user too
    anon_ids = {c.anonymous_id for c in calls if c.anonymous_id is not None}
    anon_ids |= {previous for previous, _, _ in links}
    previous_users = {previous for previous, _, kind in links if kind == "alias"}
    rows = _lock(needed | previous_users, anon_ids)
    by_user = {p.external_id: p for p in rows.values() if p.external_id is not None}
    by_anon = {p.anonymous_id: p for p in rows.values() if p.anonymous_id is not None}

    def resolve(profile: Profile) -> Profile:
        while profile.merged_into_id is not None:
            profile = rows[profile.merged_into_id]
        return profile

    def source_of(previous: str, kind: str) -> Profile | None:
        found = (by_user.get(previous) if kind == "alias" else None) or by_anon.get(previous)
        return resolve(found) if found else None

    # Visitors linked to a customer who does not exist yet become that customer.
    promoted: list[Profile] = []
    for previous, user, kind in links:
        source = source_of(previous, kind)
        if user not in by_user and source is not None and source.external_id is None:
            source.external_id = user
            by_user[user] = source
            promoted.append(source)
    if promoted:
        _promote(promoted)

    # Create who is still missing: customers (with the anonymous id of a
    # visitor seen with them for the first time), and anonymous visitors.
    new_users = sorted(needed - by_user.keys())
    first_anon: dict[str, str] = {}
    for previous, user, kind in links:
        claimable = previous not in by_anon and previous not in first_anon.values()
        if kind == "anonymous" and claimable and user in new_users:
            first_anon.setdefault(user, previous)
    new_anon = sorted(
        {c.anonymous_id for c in calls if c.user_id is None and c.anonymous_id is not None}
        - by_anon.keys()
        - {previous for previous, _, kind in links if kind == "anonymous"}
    )
    created = _create(new_users, first_anon, new_anon, received_at, rows)
    by_user.update((p.external_id, p) for p in rows.values() if p.external_id is not None)
    by_anon.update((p.anonymous_id, p) for p in rows.values() if p.anonymous_id is not None)

    merged: list[Profile] = []
    for previous, user, kind in links:
        source = source_of(previous, kind)
        target = resolve(by_user[user])
        if source is None or source.pk == target.pk:
            continue
        if kind == "anonymous" and source.external_id is not None:
            # The visitor's id already belongs to a known customer (a shared
            # device): known customers merge only when an alias says so.
            continue
        source.merged_into_id = target.pk
        merged.append(source)
    # Each into its final customer (a chain within the batch collapses).
    merges = [(source, resolve(source)) for source in merged]

    # A visitor's calls without a user id go where the batch says it belongs.
    linked: dict[str, str] = {}
    for previous, user, kind in links:
        if kind == "anonymous":
            linked.setdefault(previous, user)
    targets = []
    for call in calls:
        if call.user_id is not None:
            profile = by_user[call.user_id]
        else:
            profile = by_anon.get(call.anonymous_id) or by_user[linked[call.anonymous_id]]
        targets.append(resolve(profile))
    return Profiles(targets, created, merges)


def _links(calls: Sequence[Call]) -> list[tuple[str, str, str]]:
    """(previous id, user id, kind) for each call that says two ids are one
    person: `anonymous` for a call with both ids, `alias` for an alias."""
    links = []
    for call in calls:
        if isinstance(call, AliasIn):
            links.append((call.previous_id, call.user_id, "alias"))
        elif call.user_id is not None and call.anonymous_id is not None:
            links.append((call.anonymous_id, call.user_id, "anonymous"))
    return links


_SELECT = f"SELECT {', '.join(_FIELDS)} FROM {_TABLE} "  # noqa: S608


def _lock(user_ids: set[str], anon_ids: set[str]) -> dict[int, Profile]:
    """Lock the rows of these ids in id order, then the customers the merged
    ones among them point at."""
    rows: dict[int, Profile] = {}
    where, params = [], []
    if user_ids:
        where.append("external_id = ANY(%s::text[])")
        params.append(sorted(user_ids))
    if anon_ids:
        where.append("anonymous_id = ANY(%s::text[])")
        params.append(sorted(anon_ids))
    if not where:
        return rows
    sql = _SELECT + f"WHERE {' OR '.join(where)} ORDER BY id FOR UPDATE"
    with connection.cursor() as cursor:
        while True:
            cursor.execute(sql, params)
            for row in cursor.fetchall():
                rows[row[0]] = Profile(*row)
            pending = sorted(
                {p.merged_into_id for p in rows.values() if p.merged_into_id is not None}
                - rows.keys()
            )
            if not pending:
                return rows
            # Rare: a merged profile. Its customer is locked after the rows
            # above, out of id order; a deadlock this may cause is detected by
            # PostgreSQL and retried by ingest.
            sql = _SELECT + "WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE"
            params = [pending]


def profiles_traits_load(profiles: Iterable[Profile]) -> None:
    """Read the traits of these (locked) profiles that have not been read."""
    missing = {p.pk: p for p in profiles if p.traits is None}
    if not missing:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, traits FROM {_TABLE} WHERE id = ANY(%s::bigint[])",  # noqa: S608
            [sorted(missing)],
        )
        for pk, traits in cursor.fetchall():
            missing[pk].traits = _TRAITS.from_db_value(traits, None, connection)


def _create(
    users: list[str],
    first_anon: dict[str, str],
    anon: list[str],
    received_at: datetime,
    rows: dict[int, Profile],
) -> set[int]:
    """Insert the missing customers and visitors; lock, as found, those a
    concurrent writer created first. Returns the ids created."""
    staged = [(u, first_anon.get(u), received_at) for u in users]
    staged += [(None, a, received_at) for a in anon]
    if not staged:
        return set()
    returned = staged_write(
        "customer_new",
        (("external_id", "text"), ("anonymous_id", "text"), ("created_at", "timestamptz")),
        staged,
        f"INSERT INTO {_TABLE} "  # noqa: S608
        "(external_id, anonymous_id, email, phone, timezone, locale, traits, created_at, "
        "updated_at) SELECT external_id, anonymous_id, '', '', '', '', '{}'::jsonb, "
        "created_at, created_at FROM {staged} WHERE true "
        # One insertion order for every writer: writers of the same new ids
        # wait for each other without a cycle.
        "ORDER BY external_id, anonymous_id ON CONFLICT DO NOTHING "
        "RETURNING id, external_id, anonymous_id",
    )
    for pk, external_id, anonymous_id in returned:
        rows[pk] = Profile(pk, external_id, anonymous_id, None, None, traits={})
    created = {pk for pk, _, _ in returned}
    got_users = {e for _, e, _ in returned if e is not None}
    got_anon = {a for _, e, a in returned if e is None}
    missing_users = set(users) - got_users
    missing_anon = set(anon) - got_anon
    if missing_users or missing_anon:
        found = _lock(missing_users, missing_anon)
        rows.update(found)
        if not missing_users <= {p.external_id for p in found.values()}:
            # Skipped for its anonymous id, which a concurrent writer took.
            raise Raced("a visitor's profile was created meanwhile")
    return created


def _promote(profiles: list[Profile]) -> None:
    """Visitors who became customers: they take the user id (stamped, since
    they now belong in segments). A user id a concurrent writer created
    meanwhile fails the unique constraint, and ingest starts over."""
    staged_write(
        "customer_promote",
        (("id", "bigint"), ("external_id", "text")),
        [(p.pk, p.external_id) for p in profiles],
        f"UPDATE {_TABLE} AS c SET external_id = s.external_id, "  # noqa: S608
        f"touched_seq = {TOUCH_STAMP} FROM {{staged}} AS s WHERE c.id = s.id",
    )


def profiles_merge(merges: Sequence[tuple[Profile, Profile]], *, now: datetime) -> set[int]:
    """Merge each profile into its customer, set-based: events, stats and
    account memberships move; traits (and contact columns) the customer lacks
    are copied onto its `Profile` (the caller writes them); the profile points
    at the customer from now on, as do the profiles merged into it before.
    The apps above hear of it in this transaction (journeys end the merged
    profile's enrollments). Returns the ids of the customers whose traits
    changed."""
    if not merges:
        return set()
    profiles_traits_load(p for pair in merges for p in pair)
    pairs = sorted((source.pk, target.pk) for source, target in merges)
    events, stats = Event._meta.db_table, EventStat._meta.db_table
    memberships = AccountMembership._meta.db_table
    sources = [s for s, _ in pairs]
    # Arrays, not staged rows: a few hundred ids, and `= ANY(array)` gives the
    # planner their number, so it probes the indexes by customer. Joined with
    # a temporary table (no statistics), it read every event with a hash join
    # instead: 112 ms per 100 merges at 200,000 events, 3 ms by index.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH m AS MATERIALIZED (
                SELECT * FROM unnest(%(sources)s::bigint[], %(targets)s::bigint[])
                AS m(source_id, target_id)
            ), moved AS (
                UPDATE {events} AS e SET customer_id = m.target_id FROM m
                WHERE e.customer_id = ANY(%(sources)s::bigint[]) AND e.customer_id = m.source_id
            ), stats_gone AS (
                DELETE FROM {stats} AS s USING m
                WHERE s.customer_id = ANY(%(sources)s::bigint[]) AND s.customer_id = m.source_id
                RETURNING m.target_id, s.name, s.count, s.first_at, s.last_at
            ), stats_in AS (
                INSERT INTO {stats} (customer_id, name, count, first_at, last_at)
                SELECT target_id, name, sum(count), min(first_at), max(last_at) FROM stats_gone
                GROUP BY target_id, name ORDER BY target_id, name
                ON CONFLICT (customer_id, name) DO UPDATE SET
                count = {stats}.count + excluded.count,
                first_at = LEAST({stats}.first_at, excluded.first_at),
                last_at = GREATEST({stats}.last_at, excluded.last_at)
            ), members_gone AS (
                DELETE FROM {memberships} AS a USING m
                WHERE a.customer_id = ANY(%(sources)s::bigint[]) AND a.customer_id = m.source_id
                RETURNING m.target_id, a.account_id, a.created_at, a.grouped_at
            ), members_in AS (
                INSERT INTO {memberships} (customer_id, account_id, created_at, grouped_at)
                SELECT target_id, account_id, min(created_at), max(grouped_at) FROM members_gone
                GROUP BY target_id, account_id ORDER BY target_id, account_id
                ON CONFLICT (customer_id, account_id) DO UPDATE SET
                grouped_at = GREATEST({memberships}.grouped_at, excluded.grouped_at)
            ), chained AS (
                UPDATE {_TABLE} AS c SET merged_into_id = m.target_id FROM m
                WHERE c.merged_into_id = ANY(%(sources)s::bigint[])
                AND c.merged_into_id = m.source_id
            ), targets AS (
                -- Their events changed: segment conditions must see them again.
                UPDATE {_TABLE} AS c SET touched_seq = {TOUCH_STAMP}
                WHERE c.id = ANY(%(targets)s::bigint[])
            )
            UPDATE {_TABLE} AS c SET merged_into_id = m.target_id, merged_at = %(now)s,
            touched_seq = {TOUCH_STAMP} FROM m
            WHERE c.id = ANY(%(sources)s::bigint[]) AND c.id = m.source_id
            """,  # noqa: S608
            {"sources": sources, "targets": [t for _, t in pairs], "now": now},
        )
    changed = set()
    for source, target in merges:
        if source.last_seen_at and (
            target.last_seen_at is None or source.last_seen_at > target.last_seen_at
        ):
            target.last_seen_at = source.last_seen_at
        lacking = {k: v for k, v in _traits(source).items() if k not in _traits(target)}
        fills = {c: getattr(source, c) for c in CONTACT_FIELDS if not getattr(target, c)}
        fills = {c: v for c, v in fills.items() if v}
        if lacking or fills:
            target.traits = {**_traits(target), **lacking}
            for column, value in fills.items():
                setattr(target, column, value)
            changed.add(target.pk)
    hooks.notify_merged(pairs, now)
    return changed


def _traits(profile: Profile) -> dict:
    # Traits an older version stored as something else than an object are
    # replaced: they cannot be merged into.
    return profile.traits if isinstance(profile.traits, dict) else {}
