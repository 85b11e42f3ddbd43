"""The segments workload (issue 3): refreshing the lifecycle segments on the
demo data at 100,000 and 1,000,000 customers, a 10,000-customer change, the
membership write rate beside PostgreSQL's own, and the memberships checked
against the segments' definitions after every refresh.

Refreshes run a minute apart, as beat runs them, so the incremental ones also
find the customers whom time alone moved across a condition's edge.

The seeded databases take long to build (about 15 minutes at 1,000,000
customers), so each is built once as a template database and copied for every
run (`Bench.database_from_template`)."""

import io
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from .harness import (
    ROOT,
    Bench,
    BenchError,
    Result,
    Row,
    at_least,
    at_most,
    celery_worker,
    check,
    measured,
    number,
    progress,
    purge_queues,
    step,
    times,
    workload,
)

TEMPLATE_VERSION = "v1"  # bump when the seeded data set must change
SEED = 1
NOW_TEXT = "2026-11-01T12:00:00Z"
NOW = datetime.fromisoformat(NOW_TEXT)
# The rounds, a minute apart (beat's rhythm): the first refresh, one with
# nothing but time passing, the change, the refresh after it, a forced full one.
FIRST_AT = NOW
SECOND_AT = NOW + timedelta(minutes=1)
CHANGE_AT = NOW + timedelta(minutes=1, seconds=30)
CHANGED_AT = NOW + timedelta(minutes=2)
FULL_AT = NOW + timedelta(minutes=3)
FIXTURE = "fixtures/segments.json"

FULL_REFRESH_TARGET_S = 10.0
CHANGED_REFRESH_TARGET_S = 0.5
WRITE_TARGET = 100_000  # membership rows/s
SCALING_TARGET = 1.5
INGEST_CHUNK = 1_000
# Every statement of the bench's own connection (refreshes, checks) is cut off
# after this long, so one pathological plan is reported instead of hanging the run.
STATEMENT_TIMEOUT_S = 30
# A bench-only segment every customer is in (no customer has this trait): its
# first refresh inserts one membership per customer, for the write rate.
EVERYONE = {"trait": "bench_no_such_trait", "op": "not_exists"}
EVERYONE_SLUG = "bench-everyone"
SCRATCH = "bench_membership_scratch"
# The first refresh once more, as production runs it: beat's task fans out one
# task per segment to a Celery worker with this many processes (the Procfile's
# default, WORKER_CONCURRENCY=4). On 2 cores at 1,000,000 customers, 2, 3 and 4
# processes finished within a few percent of each other (about 7-8 s).
WORKER_PROCESSES = 4
WORKER_DEADLINE_S = 600
MEMBERSHIP = "segments_segmentmembership"


@dataclass(frozen=True)
class Size:
    label: str
    customers: int

    @property
    def template(self) -> str:
        return f"tenure_bench_seg_{self.label}_{TEMPLATE_VERSION}"

    @property
    def build(self) -> tuple[tuple[str, ...], ...]:
        return (
            (
                "seed_demo",
                f"--customers={self.customers}",
                f"--seed={SEED}",
                f"--now={NOW_TEXT}",
                "--no-progress",
            ),
        )


@dataclass(frozen=True)
class Sizes:
    small: Size
    big: Size
    changes: int  # customers changed before the measured refresh, at both sizes


FULL = Sizes(Size("100k", 100_000), Size("1m", 1_000_000), changes=10_000)
QUICK = Sizes(Size("2k", 2_000), Size("20k", 20_000), changes=500)
# BENCH_SEGMENTS_SIZES=100k (or 1m; default both): run one size only, named by
# its full-size label (with --quick, 100k picks 2k and 1m picks 20k). The one
# size then gets everything the bigger one gets (writes, the worker round);
# the scaling rows, which need both, are left out.
SIZES_ENV = "BENCH_SEGMENTS_SIZES"


def chosen_sizes() -> tuple[bool, bool]:
    """(small, big): which of the two sizes BENCH_SEGMENTS_SIZES asks for."""
    raw = os.environ.get(SIZES_ENV, "").strip()
    if not raw:
        return True, True
    labels = {label.strip().lower() for label in raw.split(",") if label.strip()}
    known = {FULL.small.label, FULL.big.label}
    if not labels or labels - known:
        raise BenchError(f"{SIZES_ENV}={raw!r}: give {FULL.small.label}, {FULL.big.label} or both")
    return FULL.small.label in labels, FULL.big.label in labels


def title() -> str:
    try:
        small, big = chosen_sizes()
    except BenchError:
        small, big = True, True  # reported when the workload runs
    shown = [f"{s.customers:,}" for s, on in ((FULL.small, small), (FULL.big, big)) if on]
    return f"segment refresh at {' and '.join(shown)} customers"


# --- Refreshing -------------------------------------------------------------


@dataclass(frozen=True)
class Refreshed:
    slug: str
    members: int
    entered: int
    exited: int
    seconds: float  # wall time of segment_refresh, hook included
    ms: int  # the service's own figure (the transaction's work)
    error: str
    mode: str = ""  # full or incremental
    candidates: int | None = None  # incremental: the customers evaluated

    @property
    def how(self) -> str:
        if self.mode == "incremental":
            return f"incremental, {self.candidates:,} evaluated"
        return self.mode


@dataclass
class Round:
    label: str
    now: datetime
    segments: list[Refreshed]
    seconds: float  # all of them, one after the other
    # slug -> set difference size, None when the check itself timed out
    differences: dict[str, int | None] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [f"{s.slug}: {s.error}" for s in self.segments if s.error]

    @property
    def slowest(self) -> Refreshed:
        return max(self.segments, key=lambda s: s.seconds)


def lifecycle_slugs() -> list[str]:
    return [item["slug"] for item in json.loads((ROOT / FIXTURE).read_text())]


def refresh_round(label: str, slugs: Sequence[str], *, now: datetime, full: bool = False) -> Round:
    """`segment_refresh` on each segment in turn, as of `now`, timed one by one."""
    from apps.segments.models import Segment
    from apps.segments.services import segment_refresh

    done = []
    with step(f"refresh: {label}") as watch:
        for slug in slugs:
            segment = Segment.objects.get(slug=slug)
            started = time.perf_counter()
            r = segment_refresh(segment, now=now, full=full)
            seconds = time.perf_counter() - started
            done.append(
                Refreshed(
                    slug,
                    r.member_count,
                    len(r.entered_ids),
                    len(r.exited_ids),
                    seconds,
                    r.ms,
                    r.error or r.skipped,
                    r.mode,
                    r.candidates,
                )
            )
    return Round(label, now, done, sum(s.seconds for s in done) or watch.seconds)


DIFFERENCE_SQL = """
SELECT (SELECT count(*) FROM (({members}) EXCEPT ({open})) AS missing)
     + (SELECT count(*) FROM (({open}) EXCEPT ({members})) AS extra)
"""
OPEN_SQL = f"SELECT customer_id FROM {MEMBERSHIP} WHERE segment_id = %s AND exited_at IS NULL"


def verify(round_: Round) -> None:
    """Per segment: the open memberships and `segment_queryset` as of the
    round's now (a full evaluation of everyone, the brute force), compared as
    sets in SQL (EXCEPT both ways); the count of differences."""
    from django.db import DatabaseError, connection

    from apps.segments.conditions import segment_queryset
    from apps.segments.models import Segment

    with step(f"check memberships after {round_.label}"), connection.cursor() as cursor:
        for s in round_.segments:
            segment = Segment.objects.get(slug=s.slug)
            query = segment_queryset(segment.definition, now=round_.now).order_by().values("id")
            sql, params = query.query.sql_with_params()
            try:
                cursor.execute(
                    DIFFERENCE_SQL.format(members=sql, open=OPEN_SQL),
                    [*params, segment.pk, segment.pk, *params],
                )
            except DatabaseError:
                round_.differences[s.slug] = None
            else:
                round_.differences[s.slug] = cursor.fetchone()[0]


# --- The first refresh as the worker runs it ---------------------------------


def forget_memberships(bench: Bench) -> None:
    """Back to the state before the first refresh: no memberships, and no
    segment refreshed yet (so every refresh is a first, full one)."""
    with bench.connect() as conn:
        conn.execute(f"TRUNCATE {MEMBERSHIP}")
        conn.execute(
            "UPDATE segments_segment SET member_count = 0, refreshed_at = NULL, "
            "refresh_ms = NULL, last_error = '', refresh_lease_until = NULL, "
            "refresh_lease_token = '', refresh_watermark = NULL, refresh_digest = '', "
            "full_refreshed_at = NULL"
        )


def worker_round(bench: Bench, label: str, slugs: Sequence[str], *, now: datetime) -> Round:
    """beat's `refresh_segments` task published once (as of `now`) to a real
    Celery worker with WORKER_PROCESSES processes, which runs the one
    `refresh_segment` task per segment it fans out. Timed from the publish
    until every segment has committed its refresh (polled every 20 ms); per
    segment, the service's own figure (`refresh_ms`)."""
    from apps.segments.tasks import refresh_segments

    query = (
        "SELECT slug, refreshed_at, last_error, member_count, refresh_ms "
        "FROM segments_segment WHERE slug = ANY(%s)"
    )
    with (
        celery_worker(bench, bench.env, processes=WORKER_PROCESSES),
        bench.connect() as conn,
    ):
        purge_queues()
        bench.settle()
        with step(f"refresh: {label}") as watch:
            started = time.perf_counter()
            refresh_segments.delay(now.isoformat())
            while True:
                rows = conn.execute(query, [list(slugs)]).fetchall()
                if sum(1 for r in rows if r[1] == now or r[2]) == len(slugs):
                    break
                if time.perf_counter() - started > WORKER_DEADLINE_S:
                    raise BenchError(f"{label}: not done after {WORKER_DEADLINE_S} s")
                time.sleep(0.02)
            seconds = time.perf_counter() - started
    done = {
        slug: Refreshed(slug, count, count, 0, (ms or 0) / 1000, ms or 0, error, "full")
        for slug, _, error, count, ms in rows
    }
    return Round(label, now, [done[slug] for slug in slugs], seconds or watch.seconds)


# --- The change -------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    canceled: int  # active customers who cancel (identify status + a track)
    logged_in: int  # at-risk customers who log in again
    updated: int  # customers ingest reports as updated
    events: int  # events stored


PICK_ACTIVE = """
SELECT external_id FROM customers_customer WHERE traits->>'status' = 'active'
ORDER BY md5(id::text) LIMIT %s
"""
PICK_AT_RISK = f"""
SELECT c.external_id FROM {MEMBERSHIP} AS m
JOIN segments_segment AS s ON s.id = m.segment_id AND s.slug = 'at-risk'
JOIN customers_customer AS c ON c.id = m.customer_id
WHERE m.exited_at IS NULL AND c.external_id <> ALL(%s)
ORDER BY md5(c.id::text) LIMIT %s
"""


def change_customers(bench: Bench, count: int) -> Change:
    """`count` customers change, through `ingest`, between the second
    refresh and the next: half of them active subscribers who cancel (an
    identify setting `status` to canceled and a `subscription_canceled`
    track), half at-risk customers who log in again (a `login` track).
    Picked by a hash of the id, so the same customers every run."""
    from apps.customers.schemas import IdentifyIn, TrackIn
    from apps.customers.services import IngestResult, ingest

    with bench.connect() as conn:
        cancel = [r[0] for r in conn.execute(PICK_ACTIVE, [count // 2])]
        login = [r[0] for r in conn.execute(PICK_AT_RISK, [cancel, count - len(cancel)])]
    at = CHANGE_AT
    calls: list[Any] = []
    for external_id in cancel:
        calls += [
            IdentifyIn(user_id=external_id, timestamp=at, traits={"status": "canceled"}),
            TrackIn(
                user_id=external_id,
                timestamp=at,
                event="subscription_canceled",
                properties={"reason": "bench"},
                message_id=f"bench-seg-cancel-{external_id}",
            ),
        ]
    calls += [
        TrackIn(user_id=i, timestamp=at, event="login", message_id=f"bench-seg-login-{i}")
        for i in login
    ]
    total = IngestResult()
    with step(f"ingest: {len(cancel):,} cancel, {len(login):,} log in again"):
        bar = progress(len(calls), "ingest", " calls")
        for start in range(0, len(calls), INGEST_CHUNK):
            chunk = calls[start : start + INGEST_CHUNK]
            total.add(ingest(chunk, received_at=CHANGE_AT, source="import"))
            bar.update(len(chunk))
        bar.close()
    return Change(len(cancel), len(login), total.customers_updated, total.events_stored)


# --- Membership writes vs raw PostgreSQL ------------------------------------


@dataclass(frozen=True)
class Writes:
    rows: int
    refresh_s: float  # segment_refresh of EVERYONE, empty before
    query_s: float  # its member query alone (counted)
    raw: dict[str, float]  # label -> rows/s
    diagnosis: str = ""  # where the refresh's time goes (EXPLAIN ANALYZE of its statement)

    @property
    def insert_s(self) -> float:
        return max(self.refresh_s - self.query_s, 1e-9)


@contextmanager
def scratch_table(conn: psycopg.Connection) -> Iterator[None]:
    """An empty twin of the membership table: same columns, defaults,
    indexes (the partial unique one included) and foreign keys, if it has
    any (it has none since the incremental refresh work: see models.py)."""
    conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
    conn.execute(f"CREATE TABLE {SCRATCH} (LIKE {MEMBERSHIP} INCLUDING ALL)")
    keys = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f'",
        [MEMBERSHIP],
    ).fetchall()
    for (definition,) in keys:
        conn.execute(f"ALTER TABLE {SCRATCH} ADD {definition}")
    try:
        yield
    finally:
        conn.execute(f"DROP TABLE {SCRATCH}")


def measure_writes(bench: Bench) -> Writes:
    """The first refresh of a segment every customer is in (so every row is
    an insert), its member query timed alone, then the same rows written
    straight into an empty twin of the membership table."""
    from django.db import connection

    from apps.segments.conditions import segment_queryset
    from apps.segments.models import Segment
    from apps.segments.services import segment_refresh

    segment = Segment.objects.create(
        slug=EVERYONE_SLUG, name="Bench: everyone", definition=EVERYONE
    )
    sql, params = (
        segment_queryset(EVERYONE, now=NOW).order_by().values("id").query.sql_with_params()
    )
    bench.settle()
    with connection.cursor() as cursor, step("member query alone (everyone)") as query:
        cursor.execute(f"SELECT count(*) FROM ({sql}) AS m", params)
    bench.settle()
    with step("segment_refresh, everyone (all inserts)") as refresh:
        r = segment_refresh(segment, now=NOW)
    if r.error:
        raise RuntimeError(f"{EVERYONE_SLUG}: {r.error}")
    rows = len(r.entered_ids)

    diagnosis = explain_diff(refresh.seconds, query.seconds)
    raw = {}
    insert_select = (
        f"INSERT INTO {SCRATCH} (segment_id, customer_id, entered_at) "
        "SELECT %s, id, %s FROM customers_customer"
    )
    with bench.connect() as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM customers_customer")]
    buffer = io.StringIO("".join(f"{segment.pk}\t{i}\t{NOW_TEXT}\n" for i in ids))
    for label in ("INSERT … SELECT", "COPY"):
        bench.settle()
        with bench.connect() as conn, scratch_table(conn):
            with step(f"raw PostgreSQL: {label}, {rows:,} rows") as watch, conn.transaction():
                if label == "COPY":
                    buffer.seek(0)
                    columns = "(segment_id, customer_id, entered_at)"
                    with conn.cursor().copy(f"COPY {SCRATCH} {columns} FROM STDIN") as copy:
                        copy.write(buffer.getvalue())
                else:
                    conn.execute(insert_select, [segment.pk, NOW])
            raw[label] = len(ids) / watch.seconds
    segment.delete()
    return Writes(rows, refresh.seconds, query.seconds, raw, diagnosis)


def explain_diff(refresh_s: float, query_s: float) -> str:
    """The refresh's statements for a second, empty segment of everyone, rolled
    back: the member set into a temporary table (timed), then EXPLAIN ANALYZE
    of the statement that writes the memberships (for an empty segment, a plain
    insert of every member), and its costliest plan nodes. It reads the
    service's private SQL, so it reports rather than fails when that changes."""
    from django.db import connection, transaction

    from apps.segments.conditions import segment_queryset
    from apps.segments.models import Segment
    from apps.segments.services import memberships

    try:
        query = segment_queryset(EVERYONE, now=NOW).order_by().values("id")
        sql, params = query.query.sql_with_params()
        table = memberships._MEMBERS_TABLE
        with transaction.atomic(), connection.cursor() as cursor:
            other = Segment.objects.create(
                slug=f"{EVERYONE_SLUG}-2", name="Bench: everyone again", definition=EVERYONE
            )
            started = time.perf_counter()
            cursor.execute(f"CREATE TEMPORARY TABLE {table} ON COMMIT DROP AS {sql}", params)
            members_s = time.perf_counter() - started
            statement = memberships._INSERT_ALL.format(table=MEMBERSHIP, members_table=table)
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", [other.pk, NOW])
            plan = cursor.fetchone()[0]
            # Foreign keys, if any, are checked at commit (deferred): run those checks now.
            started = time.perf_counter()
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            fk_s = time.perf_counter() - started
            transaction.set_rollback(True)
    except Exception as exc:  # a diagnosis only: never fail the workload for it
        return f"(EXPLAIN ANALYZE of the diff statement unavailable: {type(exc).__name__}: {exc})"
    plan = json.loads(plan) if isinstance(plan, str) else plan
    server_s = plan[0]["Execution Time"] / 1000
    rest = max(refresh_s - members_s - server_s - fk_s, 0)
    return (
        f"the member set into a temporary table takes {members_s:.2f} s; the insert "
        f"(EXPLAIN ANALYZE) runs {server_s:.2f} s in the server, most of it in "
        f"{top_nodes(plan[0]['Plan'])}"
        + (f"; foreign-key checks at commit {fk_s:.2f} s" if fk_s >= 0.01 else "")
        + f"; the rest of the {refresh_s:.2f} s refresh ({rest:.2f} s) is the entered ids "
        "read back from the member set, fetched into Python and sorted, the lease and the "
        f"bookkeeping (the member query alone, counted: {query_s:.2f} s)"
    )


# --- Where the time goes ----------------------------------------------------


def _exclusive(node: dict) -> Iterator[tuple[float, dict]]:
    """(exclusive ms, node) for every node of an EXPLAIN ANALYZE JSON plan."""
    children = node.get("Plans", [])
    total = node["Actual Total Time"] * node["Actual Loops"]
    inner = sum(c["Actual Total Time"] * c["Actual Loops"] for c in children)
    yield max(total - inner, 0.0), node
    for child in children:
        yield from _exclusive(child)


def explain(slug: str) -> str:
    """EXPLAIN ANALYZE of the segment's member query: its time, and the plan
    nodes where most of it is spent."""
    from django.db import DatabaseError, connection, transaction

    from apps.segments.conditions import segment_queryset
    from apps.segments.models import Segment
    from apps.segments.services import refresh

    segment = Segment.objects.get(slug=slug)
    query = segment_queryset(segment.definition, now=NOW).order_by().values("id")
    sql, params = query.query.sql_with_params()
    try:
        # With the refresh's own settings (work_mem, no JIT): the same plan.
        with transaction.atomic(), connection.cursor() as cursor:
            refresh._give_refresh_memory()
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
    except DatabaseError as exc:
        return f"(EXPLAIN ANALYZE of `{slug}` failed: {type(exc).__name__}: {exc})"
    plan = json.loads(plan) if isinstance(plan, str) else plan
    root = plan[0]["Plan"]
    return (
        f"`{slug}`'s member query alone takes {plan[0]['Execution Time']:,.0f} ms "
        f"({root['Actual Rows']:,} rows); most of it in {top_nodes(root)}"
    )


def plan_shape(slug: str) -> str:
    """What EXPLAIN (without ANALYZE) says of a query too slow to run: its
    estimated cost and the subplans PostgreSQL will not hash, which it then
    runs again (a scan of a materialized list) for every customer."""
    from django.db import connection

    from apps.segments.conditions import segment_queryset
    from apps.segments.models import Segment

    segment = Segment.objects.get(slug=slug)
    query = segment_queryset(segment.definition, now=NOW).order_by().values("id")
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        work_mem = cursor.fetchone()[0]
        cursor.execute(f"EXPLAIN {sql}", params)
        text = "\n".join(row[0] for row in cursor.fetchall())
    defined = re.findall(r"^\s*SubPlan (\d+)$", text, re.MULTILINE)
    hashed = set(re.findall(r"hashed SubPlan (\d+)", text))
    rescanned = [n for n in defined if n not in hashed]
    cost = re.search(r"cost=[\d.]+\.\.([\d.]+)", text)
    return (
        f"EXPLAIN estimates a cost of {float(cost.group(1)) if cost else 0:,.0f}; "
        f"{len(rescanned)} of its {len(defined)} `IN (subquery)` subplans are not hashed "
        f"(their id lists do not fit in work_mem = {work_mem}), so each is rescanned for "
        "every customer row: quadratic. `pk__in=` under `not`/`any` (count_lt, or-ed "
        "conditions) cannot become a join; with a larger work_mem the same query hashes them."
    )


def top_nodes(root: dict, count: int = 3) -> str:
    # A CTE Scan's time is its CTE's, which is a node of its own: not counted twice.
    nodes = [(ms, n) for ms, n in _exclusive(root) if n["Node Type"] != "CTE Scan"]
    top = sorted(nodes, key=lambda pair: -pair[0])[:count]
    return "; ".join(
        f"{n['Node Type']}"
        + (f" on {n['Relation Name']}" if "Relation Name" in n else "")
        + (f" using {n['Index Name']}" if "Index Name" in n else "")
        + f" ({n['Actual Rows'] * n['Actual Loops']:,} rows, {ms:,.0f} ms)"
        for ms, n in top
    )


# --- One size ---------------------------------------------------------------


@dataclass
class SizeRun:
    size: Size
    built: bool
    first: Round
    second: Round
    changed: Round
    full: Round
    change: Change
    writes: Writes | None = None
    worker: Round | None = None  # the first refresh again, as the worker runs it

    @property
    def rounds(self) -> tuple[Round, ...]:
        rounds = (self.first, self.second, self.changed, self.full)
        return (*rounds, self.worker) if self.worker is not None else rounds


def _statement_timeout(sender, connection, **kwargs) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'")


def run_size(bench: Bench, size: Size, *, changes: int, writes: bool, worker: bool) -> SizeRun:
    built = bench.database_from_template(size.template, version=TEMPLATE_VERSION, build=size.build)
    bench.manage("load_segments", FIXTURE)
    bench.django()
    from django.db.backends.signals import connection_created

    connection_created.connect(_statement_timeout, dispatch_uid="bench-segments-timeout")
    slugs = lifecycle_slugs()

    bench.settle()
    first = refresh_round(f"first refresh, {size.label}", slugs, now=FIRST_AT)
    verify(first)
    bench.settle()
    second = refresh_round(
        f"second refresh (a minute later, no new data), {size.label}", slugs, now=SECOND_AT
    )
    verify(second)
    change = change_customers(bench, changes)
    bench.settle()
    changed = refresh_round(
        f"refresh after {changes:,} changes, {size.label}", slugs, now=CHANGED_AT
    )
    verify(changed)
    bench.settle()
    full = refresh_round(
        f"full refresh (the safety net), {size.label}", slugs, now=FULL_AT, full=True
    )
    verify(full)
    run = SizeRun(size, built, first, second, changed, full, change)
    if writes:
        run.writes = measure_writes(bench)
    if worker:
        forget_memberships(bench)
        run.worker = worker_round(
            bench,
            f"first refresh as the worker runs it ({WORKER_PROCESSES} processes), {size.label}",
            slugs,
            now=FIRST_AT,
        )
        verify(run.worker)
    return run


# --- Report -----------------------------------------------------------------


def refresh_rows(run: SizeRun) -> list[Row]:
    n = f"{run.size.customers:,} customers"
    rows = [
        at_most(
            f"{n}: first refresh, {len(run.first.segments)} lifecycle segments, one after the "
            "other in-process, total",
            run.first.seconds,
            "s",
            FULL_REFRESH_TARGET_S,
        ),
    ]
    if run.worker is not None:
        w = run.worker
        rows.append(
            at_most(
                f"{n}: first refresh, {len(w.segments)} lifecycle segments, as the worker runs "
                f"it (one task per segment, {WORKER_PROCESSES} worker processes), total",
                w.seconds,
                "s",
                FULL_REFRESH_TARGET_S,
                detail=f"(slowest {w.slowest.slug} {w.slowest.seconds:.2f} s; the segments' "
                f"own times add up to {sum(s.seconds for s in w.segments):.2f} s)",
            )
        )
    rows += [
        measured(
            f"{n}: first refresh: {s.slug}",
            failed(s) or f"{s.members:,} members, {s.seconds * 1000:,.0f} ms",
        )
        for s in run.first.segments
    ]
    moved = sum(s.entered + s.exited for s in run.second.segments)
    rows.append(
        measured(
            f"{n}: second refresh (a minute later, no new data), total",
            f"{run.second.seconds:.2f} s; {moved:,} entered + exited (time crossing edges)",
        )
    )
    rows += [
        measured(
            f"{n}: second refresh: {s.slug}",
            failed(s)
            or f"{s.seconds * 1000:,.0f} ms ({s.how}; {s.entered:,} in, {s.exited:,} out)",
        )
        for s in run.second.segments
    ]
    rows.append(
        measured(
            f"{n}: full refresh of all {len(run.full.segments)} (the safety net, forced), total",
            f"{run.full.seconds:.2f} s; slowest {run.full.slowest.slug} "
            f"{run.full.slowest.seconds:.2f} s",
        )
    )
    return rows


def failed(s: Refreshed) -> str:
    return f"failed after {s.seconds:.1f} s: {s.error[:120]}" if s.error else ""


def changed_rows(run: SizeRun, *, changes: int, targets: bool) -> list[Row]:
    n = f"{run.size.customers:,} customers"
    rows = [
        measured(f"{n}: refresh after {changes:,} changes, total", f"{run.changed.seconds:.2f} s")
    ]
    for s in run.changed.segments:
        metric = f"{n}: refresh after {changes:,} changes: {s.slug}"
        detail = (
            f"({s.how}; {s.entered:,} in, {s.exited:,} out)"
            if not s.error
            else "(failed, see checks)"
        )
        if targets:
            rows.append(at_most(metric, s.seconds, "s", CHANGED_REFRESH_TARGET_S, detail=detail))
        else:
            rows.append(measured(metric, failed(s) or f"{s.seconds * 1000:,.0f} ms {detail}"))
    return rows


def check_rows(run: SizeRun, *, changes: int) -> list[Row]:
    n = f"{run.size.customers:,} customers"
    rows = []
    for round_ in run.rounds:
        wrong = {slug: d for slug, d in round_.differences.items() if d}
        unchecked = [slug for slug, d in round_.differences.items() if d is None]
        rows.append(
            check(
                f"{n}: open memberships = segment_queryset, {round_.label.rsplit(', ', 1)[0]}",
                not wrong and not round_.errors and len(round_.differences) == len(round_.segments),
                found=(
                    f"{sum(d or 0 for d in round_.differences.values()):,} differences in "
                    f"{len(round_.differences) - len(unchecked)} segments"
                    + (
                        f" ({', '.join(f'{k}: {v:,}' for k, v in wrong.items() if v)})"
                        if any(wrong.values())
                        else ""
                    )
                    + (
                        f"; not checked (over {STATEMENT_TIMEOUT_S} s): {', '.join(unchecked)}"
                        if unchecked
                        else ""
                    )
                    + (f"; errors: {'; '.join(round_.errors)}" if round_.errors else "")
                ),
                expected=f"0 differences in {len(round_.segments)} segments",
            )
        )
    later = [s for round_ in (run.second, run.changed) for s in round_.segments]
    full = [s.slug for s in later if s.mode != "incremental"]
    rows.append(
        check(
            f"{n}: the refreshes after the first are incremental",
            not full,
            found=f"{len(later) - len(full)} of {len(later)}"
            + (f" (full: {', '.join(full)})" if full else ""),
            expected=f"{len(later)} of {len(later)}",
        )
    )
    moved = sum(s.entered + s.exited for s in run.changed.segments)
    c = run.change
    rows.append(
        check(
            f"{n}: the change reached the segments",
            c.canceled + c.logged_in == changes and c.updated == c.canceled and moved >= changes,
            found=(
                f"{c.canceled:,} canceled ({c.updated:,} updated) + {c.logged_in:,} logged in; "
                f"{moved:,} entered + exited"
            ),
            expected=f"{changes:,} customers; ≥ {changes:,} moves",
        )
    )
    return rows


def write_rows(w: Writes) -> list[Row]:
    rate = w.rows / w.insert_s
    rows = [
        at_least(
            f"membership writes: segment_refresh, {w.rows:,} new members, insert part",
            rate,
            "rows/s",
            WRITE_TARGET,
        ),
        measured(
            "membership writes: that refresh, whole (member query included)",
            f"{number(w.rows / w.refresh_s)} rows/s ({w.refresh_s:.2f} s, query alone "
            f"{w.query_s:.2f} s)",
        ),
    ]
    rows += [
        measured(f"raw PostgreSQL: {label} into the membership table's twin", f"{number(r)} rows/s")
        for label, r in w.raw.items()
    ]
    best = max(w.raw.values())
    rows.append(
        measured("membership writes vs the best raw PostgreSQL", f"{times(rate / best)} of it")
    )
    return rows


def scaling_rows(small: SizeRun, big: SizeRun, *, changes: int) -> list[Row]:
    factor = big.changed.seconds / small.changed.seconds
    worst = max(
        big.changed.segments,
        key=lambda s: s.seconds / max(_by_slug(small.changed)[s.slug].seconds, 1e-9),
    )
    worst_factor = worst.seconds / _by_slug(small.changed)[worst.slug].seconds
    return [
        at_most(
            f"scaling: refresh after {changes:,} changes, "
            f"{big.size.customers:,} / {small.size.customers:,} customers",
            factor,
            "",
            SCALING_TARGET,
            detail=f"({big.changed.seconds:.2f} s / {small.changed.seconds:.2f} s)",
        ),
        measured(
            "scaling: the segment that grows most",
            f"{worst.slug}: {times(worst_factor)} "
            f"({_by_slug(small.changed)[worst.slug].seconds * 1000:,.0f} → "
            f"{worst.seconds * 1000:,.0f} ms)",
        ),
    ]


def _by_slug(round_: Round) -> dict[str, Refreshed]:
    return {s.slug: s for s in round_.segments}


def notes(sizes: Sizes, runs: Sequence[SizeRun]) -> list[str]:
    label = "--quick sizes" if sizes == QUICK else "full sizes"
    templates = ", ".join(
        f"`{r.size.template}` ({'built in this run' if r.built else 'reused'})" for r in runs
    )
    result = [
        f"{label}: `seed_demo --customers N --seed {SEED} --now {NOW_TEXT}` at "
        f"{' and '.join(f'{r.size.customers:,}' for r in runs)} customers; the data ends at "
        f"{NOW_TEXT}, the first refresh runs as of then, the next ones 1, 2 and 3 minutes "
        f"later (the change is ingested at +90 s). Databases copied from the templates "
        f"{templates}. A template is "
        "rebuilt when its recorded version or build command differs; force it with "
        "`BENCH_REBUILD_TEMPLATES=1 python -m bench segments` (or bump TEMPLATE_VERSION in "
        "bench/segments.py, or `DROP DATABASE` it).",
        "Each timed round starts after VACUUM ANALYZE and CHECKPOINT; times are the wall "
        "time of `segment_refresh` (lease, member query, diff and writes, commit, hook). "
        "`load_segments` builds the date traits' expression indexes (renewal_at) before "
        "the first refresh.",
    ]
    if len(runs) == 1:
        result.append(
            f"Only {runs[0].size.customers:,} customers in this run ({SIZES_ENV}="
            f"{os.environ.get(SIZES_ENV)}): the other size and the scaling rows were not run."
        )
    return result


def miss_notes(small: SizeRun | None, big: SizeRun) -> list[str]:
    """Where the time goes when a target was missed: EXPLAIN ANALYZE of the
    slowest first refresh's member query, what the slowest refresh after the
    change evaluated, and the diff statement of the write test."""
    out = []
    broken = sorted({r.slug for rnd in big.rounds for r in rnd.segments if r.error})
    for slug in broken:
        out.append(f"`{slug}` did not finish within {STATEMENT_TIMEOUT_S} s: {plan_shape(slug)}")
    first = [r for r in big.first.segments if not r.error]
    if big.first.seconds > FULL_REFRESH_TARGET_S and first:
        slow = max(first, key=lambda r: r.seconds)
        written = sum(r.entered for r in first)
        floor = ""
        if big.writes is not None:
            best = max(big.writes.raw.values())
            floor = (
                f" Writing that many rows into the membership table takes {written / best:.1f} s "
                f"at the best raw PostgreSQL rate of this run ({number(best)} rows/s), "
                f"{written / (big.writes.rows / big.writes.insert_s):.1f} s at the refresh's "
                "own: on this machine the writes alone leave little or nothing of the target "
                "for evaluating the conditions."
            )
        out.append(
            "The first refresh is a full one: every segment evaluated for everyone and every "
            f"member written, {written:,} memberships in all.{floor} "
            + explain(slow.slug)
            + f" (of {slow.seconds * 1000:,.0f} ms for its first refresh, which also wrote "
            f"{slow.entered:,} memberships)."
        )
    working = [r for r in big.changed.segments if not r.error]
    if working:
        slow = max(working, key=lambda r: r.seconds)
        if slow.seconds > CHANGED_REFRESH_TARGET_S or (
            small is not None and big.changed.seconds > SCALING_TARGET * small.changed.seconds
        ):
            out.append(
                f"After the change, the slowest refresh is `{slow.slug}` ({slow.how}, "
                f"{slow.seconds * 1000:,.0f} ms); an incremental refresh costs in proportion "
                "to the customers it evaluates, plus a fixed part (the lease, the watermark, "
                "the candidate search by index, the bookkeeping and the commit)."
            )
    w = big.writes
    if w is not None and w.rows / w.insert_s < WRITE_TARGET:
        out.append(f"Membership writes, where the time goes: {w.diagnosis}.")
    return out


# --- The workload -----------------------------------------------------------


@workload("segments", title())
def run(bench: Bench) -> Result:
    """The lifecycle segments (fixtures/segments.json) refreshed on the demo
    data, with `segment_refresh` called in-process, one segment after the
    other. Refreshes run a minute apart, as beat runs them; after the first,
    they are incremental: only the customers stamped as changed since the
    previous refresh, and those whose data time carried across an edge of
    the condition, are evaluated and diffed.

    1. **First refresh** at 1,000,000 customers (about 21 events each): no
       memberships yet, every segment evaluated for everyone (a full
       refresh) and every member inserted. Then a **second refresh** a
       minute later, with no new data (only time passing).
    2. **A change**: 10,000 customers change through `ingest` (half of them
       active subscribers who cancel, half at-risk customers who log in
       again), then a refresh; the time per segment, how many customers it
       evaluated, who entered and left.
    3. **The safety net**: a forced full refresh of every segment (what
       runs every SEGMENT_FULL_REFRESH_EVERY_S), for its cost.
    4. **Membership writes**: the first refresh of a segment every customer
       is in (all inserts), its member query timed alone and subtracted;
       beside it the same rows written straight into an empty twin of the
       membership table (same indexes and keys) by INSERT … SELECT and by
       COPY: PostgreSQL's own ceiling in the same run.
    5. **Scaling**: steps 1 and 2 at 100,000 customers too; the ratio of
       the refresh after the same 10,000 changes.
    6. **The first refresh as the worker runs it**, at 1,000,000
       customers: the memberships emptied again, beat's `refresh_segments`
       task published to a real Celery worker with 4 processes (the
       Procfile's default), which runs the one task per segment it fans
       out, side by side; timed from the publish until the last segment
       has committed.
    7. **Checks** after every refresh: for every segment, its open
       memberships equal `segment_queryset(definition, now)` evaluated for
       everyone (the brute force; EXCEPT both ways in SQL, 0 differences)."""
    sizes = QUICK if bench.quick else FULL
    want_small, want_big = chosen_sizes()
    if not want_big:  # one size only: it is measured as the big one is
        only = run_size(bench, sizes.small, changes=sizes.changes, writes=True, worker=True)
    elif not want_small:
        only = run_size(bench, sizes.big, changes=sizes.changes, writes=True, worker=True)
    else:
        only = None
    if only is not None:
        result = Result(rows=refresh_rows(only), notes=notes(sizes, [only]))
        result.rows += changed_rows(only, changes=sizes.changes, targets=True)
        result.rows += write_rows(only.writes)
        result.rows += check_rows(only, changes=sizes.changes)
        result.notes += miss_notes(None, only)
        return result
    small = run_size(bench, sizes.small, changes=sizes.changes, writes=False, worker=False)
    big = run_size(bench, sizes.big, changes=sizes.changes, writes=True, worker=True)
    result = Result(rows=refresh_rows(big), notes=notes(sizes, [small, big]))
    result.rows += changed_rows(big, changes=sizes.changes, targets=True)
    result.rows += write_rows(big.writes)
    result.rows += changed_rows(small, changes=sizes.changes, targets=False)
    result.rows += scaling_rows(small, big, changes=sizes.changes)
    result.rows.append(
        measured(
            f"{small.size.customers:,} customers: first refresh, total",
            f"{small.first.seconds:.2f} s",
        )
    )
    result.rows += check_rows(small, changes=sizes.changes) + check_rows(big, changes=sizes.changes)
    result.notes += miss_notes(small, big)
    return result
