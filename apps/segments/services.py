"""Writes to segments: the set-based refresh, static uploads, loading from files.

A refresh diffs the segment's member set, as of `now`, against its open
memberships in SQL: leavers are closed and newcomers opened in bulk, history is
kept (closed rows stay; coming back opens a new row), and the hook is told once,
after commit, with the id lists. Refreshes of one segment never overlap: each
holds a lease on the segment's row, claimed by compare-and-set.

Most refreshes are incremental (incremental.py): only the customers whose data
changed since the previous refresh, or whose data time has carried across an
edge of the condition, are evaluated and diffed. A full refresh (everyone)
runs the first time, after the definition changed, when the incremental one
cannot be trusted, and every SEGMENT_FULL_REFRESH_EVERY_S as a safety net.
"""

import csv
import io
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import IO, Annotated, Any, Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from pydantic import BaseModel, ConfigDict, StringConstraints

from apps.core.bulk import datetime_adapter, values_subquery
from apps.core.fixtures import LoadReport, validated_items
from apps.customers.models import Customer
from apps.customers.services import touch_stamping_ok, touch_watermark

from . import hooks
from .conditions import (
    Condition,
    ConditionError,
    _segment_lookup,
    parse,
    segment_queryset,
    validate_definition,
)
from .incremental import (
    SCOPE,
    Edges,
    Unbounded,
    candidates_sql,
    definition_digest,
    ensure_trait_time_index,
    time_edges,
)
from .models import Segment, SegmentMembership, SegmentSnapshot

logger = logging.getLogger(__name__)

# Longer than the refresh task's hard time limit (CELERY_TASK_TIME_LIMIT, 300 s):
# a lease outlives its refresh only when the process holding it died, and then
# the segment waits at most this long before another refresh takes over.
REFRESH_LEASE = timedelta(minutes=10)
# Past this many customers changed since the previous refresh, testing them
# one by one costs more than evaluating everyone at once: a full refresh.
INCREMENTAL_MAX_CHANGED = 100_000


# --- refresh ------------------------------------------------------------------------


@dataclass
class RefreshResult:
    slug: str
    entered_ids: list[int] = field(default_factory=list)
    exited_ids: list[int] = field(default_factory=list)
    member_count: int = 0
    ms: int = 0
    skipped: str = ""  # why this refresh did not run
    error: str = ""  # why it failed (also in Segment.last_error)
    full_reason: str = ""  # why everyone was evaluated; empty: incremental
    candidates: int | None = None  # incremental: the customers evaluated

    @property
    def mode(self) -> str:
        return "full" if self.full_reason else "incremental"

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.error


class LeaseLost(RuntimeError):
    """Another refresh took the segment's lease over (ours had expired)."""


def segments_refresh_all(*, now: datetime, full: bool = False) -> list[RefreshResult]:
    """Refresh every active dynamic segment (all in full with `full`), one
    after the other in this process; one failing does not stop the others.
    Also records today's size of the active static segments, so every
    segment's growth chart has a point per day (see `_snapshot`)."""
    results = [segment_refresh(segment, now=now, full=full) for segment in _refreshable()]
    _snapshot_static(now=now)
    return results


def segments_refresh_publish(*, now: datetime, publish: Callable[[int], Any]) -> list[int]:
    """What beat's task does every minute: `publish` one refresh per active
    dynamic segment (its id), for the worker's processes to run side by side,
    and record today's size of the active static segments. The slowest
    segments (by their last refresh) go first, so that the last to finish
    starts early. Returns the ids, in the order published."""
    ids = list(
        _refreshable()
        .order_by(F("refresh_ms").desc(nulls_last=True), "slug")
        .values_list("pk", flat=True)
    )
    for pk in ids:
        publish(pk)
    _snapshot_static(now=now)
    return ids


def segment_refresh_by_id(segment_id: int, *, now: datetime) -> RefreshResult | None:
    """Refresh one segment published by `segments_refresh_publish`, if it is
    still an active dynamic segment (None when it was deleted, paused or made
    static since)."""
    segment = _refreshable().filter(pk=segment_id).first()
    return segment_refresh(segment, now=now) if segment is not None else None


def _refreshable():
    return Segment.objects.filter(is_active=True, kind=Segment.Kind.DYNAMIC).order_by("slug")


def _snapshot_static(*, now: datetime) -> None:
    static = Segment.objects.filter(is_active=True, kind=Segment.Kind.STATIC)
    _snapshot({s.pk: s.member_count for s in static.only("pk", "member_count")}, now=now)


def segment_refresh(segment: Segment, *, now: datetime, full: bool = False) -> RefreshResult:
    """Bring a dynamic segment's open memberships in line with its definition
    as of `now`: incrementally when it can (see the module docstring), in full
    otherwise or with `full`. Never raises for a bad definition or a database
    error: the error is logged, kept in `last_error` and returned."""
    if segment.kind != Segment.Kind.DYNAMIC:
        raise ValueError(f"{segment.slug}: a static segment is uploaded, not refreshed")
    token = _lease_claim(segment.pk, now=now)
    if token is None:
        reason = (
            "another refresh of this segment is running"
            if Segment.objects.filter(pk=segment.pk).exists()
            else "the segment no longer exists"
        )
        logger.info("segment %s: refresh skipped: %s", segment.slug, reason)
        return RefreshResult(segment.slug, member_count=segment.member_count, skipped=reason)

    started = time.monotonic()
    try:
        _prepare_indexes(segment)
        with transaction.atomic():
            _give_refresh_memory()
            # The state as it is now, not as it was when `segment` was loaded.
            segment.refresh_from_db(fields=_STATE_FIELDS)
            condition = validate_definition(segment.definition, slug=segment.slug)
            # Read before anything is evaluated: every change stamped below it
            # is visible to what follows (services.touch_watermark).
            watermark = touch_watermark()
            lookup = _segment_lookup()
            digest = definition_digest(segment.definition, lookup)
            full_reason = "asked for" if full else ""
            edges = None
            if not full_reason:
                full_reason, edges = _incremental_or_why_not(
                    segment, condition, digest=digest, now=now, lookup=lookup
                )
            if full_reason:
                members = segment_queryset(segment.definition, now=now)
                scope = None
            else:
                scope = candidates_sql(
                    edges,
                    watermark=segment.refresh_watermark,
                    since=segment.refreshed_at,
                    until=now,
                )
                among = f"SELECT id FROM {SCOPE}"  # noqa: S608 - our own name
                members = segment_queryset(segment.definition, now=now, among=among)
            entered, exited, count, candidates = _apply_member_set(
                segment.pk,
                members.order_by().values("id").query.sql_with_params(),
                now=now,
                close_others=True,
                scope=scope,
                members_before=segment.member_count,
            )
            ms = round((time.monotonic() - started) * 1000)
            # The fence: the results are kept only if the lease is still ours.
            held = Segment.objects.filter(pk=segment.pk, refresh_lease_token=token).update(
                member_count=count,
                refreshed_at=now,
                refresh_ms=ms,
                last_error="",
                refresh_lease_until=None,
                refresh_lease_token="",
                refresh_watermark=watermark,
                refresh_digest=digest,
                full_refreshed_at=now if full_reason else F("full_refreshed_at"),
            )
            if not held:
                raise LeaseLost("the refresh took longer than its lease and was taken over")
            _snapshot({segment.pk: count}, now=now)
            segment.member_count, segment.refreshed_at, segment.refresh_ms = count, now, ms
            segment.last_error = ""
            segment.refresh_watermark, segment.refresh_digest = watermark, digest
            if full_reason:
                segment.full_refreshed_at = now
            if entered or exited:
                transaction.on_commit(partial(hooks.notify, segment, entered, exited, now))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ConditionError):
            logger.error("segment %s: refresh failed: %s", segment.slug, error)
        else:
            logger.exception("segment %s: refresh failed: %s", segment.slug, error)
        Segment.objects.filter(pk=segment.pk, refresh_lease_token=token).update(
            last_error=error, refresh_lease_until=None, refresh_lease_token=""
        )
        segment.last_error = error
        ms = round((time.monotonic() - started) * 1000)
        return RefreshResult(segment.slug, member_count=segment.member_count, ms=ms, error=error)

    if full_reason:
        logger.info("segment %s: full refresh (%s), %d ms", segment.slug, full_reason, ms)
    return RefreshResult(
        segment.slug,
        entered,
        exited,
        member_count=count,
        ms=ms,
        full_reason=full_reason,
        candidates=candidates,
    )


_STATE_FIELDS = [
    "definition",
    "member_count",
    "refreshed_at",
    "refresh_watermark",
    "refresh_digest",
    "full_refreshed_at",
]


def _incremental_or_why_not(
    segment: Segment, condition: Condition, *, digest: str, now: datetime, lookup
) -> tuple[str, Edges | None]:
    """Whether the open memberships are a base an incremental refresh can
    start from: ("", the condition's time edges) when they are, else (why not,
    None)."""
    every = timedelta(seconds=settings.SEGMENT_FULL_REFRESH_EVERY_S)
    if segment.refresh_watermark is None or segment.refreshed_at is None:
        return "first refresh", None
    if digest != segment.refresh_digest:
        return "the definition changed", None
    if now < segment.refreshed_at:
        return "now is before the previous refresh", None
    if segment.full_refreshed_at is None or now - segment.full_refreshed_at >= every:
        return "periodic full refresh", None
    try:
        edges = time_edges(condition, lookup)
    except Unbounded as exc:
        return f"cannot bound the changes of {exc}", None
    if not touch_stamping_ok():
        logger.warning("the customers' touch stamping triggers are missing: full refreshes only")
        return "the customers' touch stamping triggers are missing", None
    changed = Customer.objects.filter(touched_seq__gte=segment.refresh_watermark)
    if changed[INCREMENTAL_MAX_CHANGED : INCREMENTAL_MAX_CHANGED + 1].exists():
        return f"over {INCREMENTAL_MAX_CHANGED:,} customers changed", None
    return "", edges


def _prepare_indexes(segment: Segment) -> None:
    """Outside the refresh's transaction: the expression indexes of the date
    traits the definition tests (incremental.ensure_trait_time_index). A
    definition that does not parse is left for the refresh to report."""
    try:
        edges = time_edges(parse(segment.definition), _segment_lookup())
    except (ConditionError, Unbounded):
        return
    for trait in sorted(edges.traits):
        ensure_trait_time_index(trait)


def _give_refresh_memory() -> None:
    """Room for hashing a million customer ids (PostgreSQL, this transaction
    only): with the default 4 MB a hashed IN/NOT IN subplan falls back to
    re-running its subquery for every customer. And no JIT compilation: the
    refresh's statements are estimated expensive enough to trigger it, and
    compiling them costs 100 ms or more, more than an incremental refresh
    takes, and gains little on a full one."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)",
                [settings.SEGMENT_REFRESH_WORK_MEM],
            )


def _lease_claim(segment_id: int, *, now: datetime) -> str | None:
    """Claim the segment's refresh lease: a compare-and-set that changes the
    row only when no lease is held or it has expired, so of any number of
    concurrent claims exactly one gets it (PostgreSQL re-checks the condition
    after waiting for a competing update; SQLite has one writer at a time).
    Returns the lease's token, or None when another refresh holds it."""
    token = secrets.token_hex(16)
    claimed = (
        Segment.objects.filter(pk=segment_id)
        .filter(Q(refresh_lease_until__isnull=True) | Q(refresh_lease_until__lte=now))
        .update(refresh_lease_until=now + REFRESH_LEASE, refresh_lease_token=token)
    )
    return token if claimed == 1 else None


# The diff. `members` is the new member set (Django's compiled query); an
# incremental refresh also gives the `scope`, the candidates (incremental.py):
# its members are drawn from them, and only their open memberships are diffed.
#
# PostgreSQL, one statement (writable WITH queries all see one snapshot, and the
# member set is computed once): a FULL JOIN of the new set with the open
# memberships yields joiners (no open membership) and leavers (open, no longer
# a member) in one pass; the leavers are closed by primary key and the joiners
# inserted. Every step has one possible plan shape: PostgreSQL runs a FULL JOIN
# only as a hash or merge join, the leavers are found by primary key probes,
# and the insert reads no table. NOT EXISTS and IN (… EXCEPT …) were tried
# first: planned on a misestimate (the membership table before its first
# ANALYZE, a condition estimated at a handful of customers) they became nested
# loops that rescan one side per row of the other. At 1,000,000 customers the
# first refresh of a 250,000-member segment took 216 s that way, a
# 10,000-customer change 72 s. The ids come back as two arrays, not a row each.
#
# A full refresh first computes the member set into a temporary table: CREATE
# TABLE AS may run in parallel, which a statement that writes may not, and the
# member query of everyone is most of a full refresh's reading.
#
# SQLite, two statements: it evaluates a NOT IN (subquery) once, into a
# temporary index, and has no plan that rescans it.
#
# No ON CONFLICT: its speculative insertion costs a third more per row, and no
# one else opens memberships of the segment meanwhile (a refresh holds the
# segment's lease, an upload locks its row). Were anyone to, the one-open index
# refuses the duplicate, and the refresh fails, is logged, and runs again.
_PG_DIFF = """
WITH {scope}members (id) AS {members},
diff AS MATERIALIZED (
    SELECT m.id AS joiner, o.id AS leaving
    FROM members AS m
    FULL JOIN ({open}) AS o ON o.customer_id = m.id
    WHERE m.id IS NULL OR o.id IS NULL
),
exited AS (
    UPDATE {table} AS t SET exited_at = %s
    FROM (SELECT unnest(ARRAY(SELECT leaving FROM diff WHERE leaving IS NOT NULL)) AS id) AS l
    WHERE %s AND t.id = l.id AND t.exited_at IS NULL
    RETURNING t.customer_id
),
entered AS (
    INSERT INTO {table} (segment_id, customer_id, entered_at)
    SELECT %s, joiner, %s FROM diff WHERE joiner IS NOT NULL
    RETURNING customer_id
)
SELECT (SELECT array_agg(customer_id) FROM entered),
       (SELECT array_agg(customer_id) FROM exited),
       {count}
"""
_PG_MEMBERS_TABLE = "tenure_members"
# A segment with no open memberships (its first refresh): every member enters,
# and nothing needs joining. The ids entered are the member set's, read back
# from the temporary table: RETURNING them from the insert costs more (at
# 1,000,000 members, 0.6 s of CPU against 0.2 s).
_PG_INSERT_ALL = """
INSERT INTO {table} (segment_id, customer_id, entered_at) SELECT %s, id, %s FROM {members_table}
"""
_PG_INSERTED_ALL = "SELECT array_agg(id), NULL, count(*), NULL FROM {members_table}"
# The segment's open memberships; with a scope, those of the candidates, each
# found by its own probe of the one-open index (OFFSET 0 keeps the subquery from
# being flattened into a join, which a stale estimate of the table could turn
# into a scan of all the segment's open memberships).
_PG_OPEN = "SELECT id, customer_id FROM {table} WHERE segment_id = %s AND exited_at IS NULL"
_PG_OPEN_SCOPED = """SELECT o.id, o.customer_id FROM {scope_name} AS s CROSS JOIN LATERAL (
        SELECT id, customer_id FROM {table}
        WHERE segment_id = %s AND exited_at IS NULL AND customer_id = s.id OFFSET 0) AS o"""
# The open memberships after the statement (the members), and, with a scope,
# the number of candidates.
_PG_COUNT_FULL = "(SELECT count(*) FROM members), NULL"
_PG_COUNT_SCOPED = "NULL, (SELECT count(*) FROM {scope_name})"
_SQLITE_CLOSE = """
WITH {scope}members (id) AS ({members})
UPDATE {table} SET exited_at = %s
WHERE segment_id = %s AND exited_at IS NULL{in_scope}
  AND customer_id NOT IN (SELECT id FROM members)
RETURNING customer_id
"""
_SQLITE_OPEN = """
WITH {scope}members (id) AS ({members})
INSERT INTO {table} (segment_id, customer_id, entered_at)
SELECT %s, id, %s FROM members
WHERE id NOT IN (SELECT customer_id FROM {table} WHERE segment_id = %s AND exited_at IS NULL)
RETURNING customer_id
"""


def _apply_member_set(
    segment_id: int,
    members: tuple[str, Sequence],
    *,
    now: datetime,
    close_others: bool,
    scope: tuple[str, Sequence] | None = None,
    members_before: int = 0,
) -> tuple[list[int], list[int], int, int | None]:
    """Open memberships for the customers in `members` (SQL selecting customer
    ids, and its parameters) who have none; with `close_others`, close those of
    everyone else, or, given a `scope` (SQL selecting the candidates' ids, which
    `members` may read as the table SCOPE), of everyone else in the scope.
    Returns (entered ids, exited ids, open memberships after, the number of
    candidates or None without a scope).

    With a scope, the count after is `members_before` (the segment's count
    before) plus the changes: counting a big segment's open memberships would
    cost in proportion to its size, the one thing a scoped refresh avoids. A
    customer deleted since (its memberships go with it) is counted until the
    next full refresh."""
    members_sql, members_params = members
    scope_sql, scope_params = scope if scope is not None else ("", [])
    parts = {
        "members": members_sql,
        "table": SegmentMembership._meta.db_table,
        "scope": f"{SCOPE} (id) AS MATERIALIZED ({scope_sql}),\n" if scope else "",
        "in_scope": f" AND customer_id IN (SELECT id FROM {SCOPE})" if scope else "",  # noqa: S608
    }
    at = datetime_adapter()(now)
    entered: list[int] = []
    exited: list[int] = []
    count: int | None = None
    candidates: int | None = None
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            tail = _PG_COUNT_SCOPED.format(scope_name=SCOPE) if scope else _PG_COUNT_FULL
            open_sql = (_PG_OPEN_SCOPED if scope else _PG_OPEN).format(**parts, scope_name=SCOPE)
            if scope:
                parts["members"] = f"MATERIALIZED ({members_sql})"
            else:
                temporary = _PG_MEMBERS_TABLE
                cursor.execute(f"DROP TABLE IF EXISTS {temporary}")
                cursor.execute(
                    f"CREATE TEMPORARY TABLE {temporary} ON COMMIT DROP AS {members_sql}",
                    members_params,
                )
                parts["members"] = f"(SELECT id FROM {temporary})"  # noqa: S608
                members_params = []
                cursor.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {parts['table']} "  # noqa: S608
                    "WHERE segment_id = %s AND exited_at IS NULL)",
                    [segment_id],
                )
                (anyone_open,) = cursor.fetchone()
            if not scope and not anyone_open:
                cursor.execute(
                    _PG_INSERT_ALL.format(table=parts["table"], members_table=temporary),
                    [segment_id, at],
                )
                cursor.execute(_PG_INSERTED_ALL.format(members_table=temporary))
            else:
                cursor.execute(
                    _PG_DIFF.format(**parts, open=open_sql, count=tail),
                    # Appending closes nothing: the exit condition is then false.
                    [*scope_params, *members_params, segment_id, at, close_others, segment_id, at],
                )
            entered_ids, exited_ids, count, candidates = cursor.fetchone()
            entered, exited = sorted(entered_ids or []), sorted(exited_ids or [])
            if not scope:
                cursor.execute(f"DROP TABLE {temporary}")
        else:
            parts["scope"] = parts["scope"].replace(" MATERIALIZED", "")
            if close_others:
                cursor.execute(
                    _SQLITE_CLOSE.format(**parts),
                    [*scope_params, *members_params, at, segment_id],
                )
                exited = sorted(row[0] for row in cursor.fetchall())
            cursor.execute(
                _SQLITE_OPEN.format(**parts),
                [*scope_params, *members_params, segment_id, at, segment_id],
            )
            entered = sorted(row[0] for row in cursor.fetchall())
            if scope:
                cursor.execute(f"SELECT count(*) FROM ({scope_sql})", scope_params)  # noqa: S608
                candidates = cursor.fetchone()[0]
    if scope:
        count = members_before + len(entered) - len(exited)
    elif count is None or not close_others:
        # SQLite, or appending (the open memberships are the list and more).
        count = SegmentMembership.objects.filter(
            segment_id=segment_id, exited_at__isnull=True
        ).count()
    return entered, exited, count, candidates


# --- snapshots ------------------------------------------------------------------------


def _snapshot(sizes: dict[int, int], *, now: datetime) -> None:
    """Upsert today's (UTC) size of each segment. Taken at every refresh and
    upload rather than by a daily task: the chart's last point is live, a day's
    row ends as that day's closing size, and no day is lost because beat was
    down at one particular minute."""
    if not sizes:
        return
    day = _utc_day(now)
    SegmentSnapshot.objects.bulk_create(
        [SegmentSnapshot(segment_id=pk, day=day, member_count=n) for pk, n in sizes.items()],
        update_conflicts=True,
        unique_fields=["segment", "day"],
        update_fields=["member_count"],
    )


def _utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


# --- static segments ---------------------------------------------------------------------

UploadMode = Literal["replace", "append"]
UPLOAD_MODES = ("replace", "append")
MAX_EXTERNAL_ID = Customer._meta.get_field("external_id").max_length


@dataclass
class UploadReport:
    added: int
    removed: int
    unknown_ids: list[str]
    already_members: int


def segment_static_upload(
    segment: Segment, external_ids: Iterable[str], *, mode: UploadMode, now: datetime
) -> UploadReport:
    """Make the customers with these external ids members of a static segment.
    `replace` also closes the memberships of everyone not in the list; `append`
    only adds. Ids of no known customer are reported, never created."""
    if mode not in UPLOAD_MODES:
        raise ValueError(f"mode must be 'replace' or 'append', got {mode!r}")
    if segment.kind != Segment.Kind.STATIC:
        raise ValueError(f"{segment.slug}: a dynamic segment's members come from its condition")
    ids = list(dict.fromkeys(i.strip() for i in external_ids if i and i.strip()))
    # No customer has such an id (PostgreSQL text cannot even hold a NUL).
    possible = [i for i in ids if "\x00" not in i and len(i) <= MAX_EXTERNAL_ID]
    with transaction.atomic():
        # Uploads to one segment queue behind each other (the row lock on
        # PostgreSQL; SQLite has a single writer anyway).
        Segment.objects.select_for_update().filter(pk=segment.pk).values_list("pk").get()
        listed = Customer.objects.filter(external_id__in=values_subquery(possible))
        known = set(listed.values_list("external_id", flat=True))
        entered, exited, count, _ = _apply_member_set(
            segment.pk,
            listed.order_by().values("id").query.sql_with_params(),
            now=now,
            close_others=mode == "replace",
        )
        # The segments nesting this one refresh in full next time (their
        # digests include the version); its own incremental state, should it
        # ever become dynamic, no longer describes its memberships.
        Segment.objects.filter(pk=segment.pk).update(
            member_count=count,
            refreshed_at=now,
            last_error="",
            list_version=F("list_version") + (1 if entered or exited else 0),
            refresh_watermark=None,
            refresh_digest="",
        )
        _snapshot({segment.pk: count}, now=now)
        segment.member_count, segment.refreshed_at = count, now
        if entered or exited:
            transaction.on_commit(partial(hooks.notify, segment, entered, exited, now))
    return UploadReport(
        added=len(entered),
        removed=len(exited),
        unknown_ids=[i for i in ids if i not in known],
        already_members=len(known) - len(entered),
    )


CSV_ID_COLUMN = "external_id"
MAX_CSV_ERRORS = 10


def parse_external_ids_csv(file: IO) -> list[str]:
    """The external ids in an uploaded CSV, in file order without repeats:
    either a file with an `external_id` column in its header (other columns
    ignored) or a single column of ids with no header. Raises ValueError naming
    the line(s) of malformed input."""
    if hasattr(file, "seek"):
        file.seek(0)
    raw = file.read()
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ValueError(f"line {line}: not UTF-8 text; save the file as UTF-8 CSV") from None
    else:
        text = raw.removeprefix("\ufeff")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    ids: list[str] = []
    errors: list[str] = []
    column: int | None = None  # the external_id column; None: one id per line
    first = True
    try:
        for row in reader:
            cells = [c.strip() for c in row]
            while cells and not cells[-1]:
                cells.pop()  # trailing commas
            if not cells:
                continue
            line = reader.line_num
            if first:
                first = False
                names = [c.lower() for c in cells]
                if CSV_ID_COLUMN in names:
                    column = names.index(CSV_ID_COLUMN)
                    continue
                if len(cells) > 1:
                    raise ValueError(
                        f"line {line}: the header has no {CSV_ID_COLUMN!r} column (it has "
                        f"{', '.join(repr(c) for c in cells)}); upload a CSV with an "
                        f"{CSV_ID_COLUMN!r} column or a single column of ids"
                    )
            if column is None and len(cells) > 1:
                errors.append(
                    f"line {line}: {len(cells)} columns; a file without an "
                    f"{CSV_ID_COLUMN!r} header must have one id per line"
                )
            else:
                value = cells[column or 0] if len(cells) > (column or 0) else ""
                if not value:
                    errors.append(f"line {line}: no {CSV_ID_COLUMN}")
                elif "\x00" in value:
                    errors.append(f"line {line}: contains a NUL character")
                elif len(value) > MAX_EXTERNAL_ID:
                    errors.append(f"line {line}: longer than {MAX_EXTERNAL_ID} characters")
                else:
                    ids.append(value)
            if len(errors) >= MAX_CSV_ERRORS:
                errors.append("… (stopped reading)")
                break
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: not valid CSV: {exc}")
    if errors:
        raise ValueError("; ".join(errors))
    if not ids:
        raise ValueError("the file has no external ids")
    return list(dict.fromkeys(ids))


# --- loading from files -----------------------------------------------------------------


class SegmentIn(BaseModel):
    """A segment as `load_segments` reads it."""

    model_config = ConfigDict(extra="forbid")

    slug: Annotated[str, StringConstraints(pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: str = ""
    definition: Any = None
    kind: Literal["dynamic", "static"] = "dynamic"
    # Absent: an existing segment keeps its switch (a reload never reactivates).
    is_active: bool | None = None


def segments_load(items: Any, *, only_new: bool = False) -> LoadReport:
    """Upsert segments by slug from a list of {slug, name, description,
    definition, kind}, all or nothing: any invalid entry raises ValueError
    naming it (and the path of a bad condition) and nothing is written.
    Definitions are checked after every segment of the file is written, inside
    the same transaction, so segments may refer to ones later in the file.
    With `only_new`, segments that exist are kept as they are (a marketer's
    edits survive `make run`)."""
    valid, errors = validated_items(items, SegmentIn, noun="segment")
    entries: list[SegmentIn] = []
    for label, entry in valid:
        if entry.kind == Segment.Kind.STATIC and entry.definition is not None:
            errors.append(f"{label}: a static segment has no definition (its members are a list)")
        entries.append(entry)
    if errors:
        raise ValueError("\n".join(errors))

    report = LoadReport()
    with transaction.atomic():
        existing = set(Segment.objects.values_list("slug", flat=True)) if only_new else set()
        for entry in entries:
            if entry.slug in existing:
                report.kept.append(entry.slug)
                continue
            values = entry.model_dump(exclude={"slug", "is_active"})
            if entry.is_active is not None:
                values["is_active"] = entry.is_active
            _, created = Segment.objects.update_or_create(slug=entry.slug, defaults=values)
            (report.created if created else report.updated).append(entry.slug)
        for i, entry in enumerate(entries):
            if entry.kind == Segment.Kind.DYNAMIC and entry.slug not in existing:
                try:
                    validate_definition(entry.definition, slug=entry.slug)
                except ConditionError as exc:
                    # Raising rolls back every segment written above.
                    raise ValueError(f"segments[{i}] ({entry.slug!r}): definition: {exc}") from None
    # Their date traits' indexes now, rather than in their first refresh.
    for segment in Segment.objects.filter(slug__in=report.created + report.updated):
        if segment.kind == Segment.Kind.DYNAMIC:
            _prepare_indexes(segment)
    return report
