"""Workload "ingestion": usage data in through `import_events` and the batch
API, against what PostgreSQL itself can take for the same rows."""

import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import accumulate, islice
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from .harness import (
    Bench,
    LoadResult,
    Result,
    Row,
    at_least,
    check,
    gunicorn,
    measured,
    number,
    post_concurrently,
    ratio,
    step,
    workload,
)

IMPORT_TARGET = 20_000  # events/s through `import_events`
API_TARGET = 5_000  # events/s through POST /api/v1/batch, 100 per batch
BATCH = 100
# gunicorn sync workers tried on this 2-core machine, each a separate round.
WORKER_COUNTS = (2, 3, 4)
# A sync worker serves one request at a time: one client each keeps it busy
# without measuring time spent queued in gunicorn's backlog.
CLIENTS_PER_WORKER = 1
WARMUP_BATCHES_PER_CLIENT = 2
# Rounds within this share of the best throughput count as equally fast.
SAME_THROUGHPUT = 0.95
SEED = 20_251_121
HISTORY = timedelta(days=90)


@dataclass(frozen=True)
class Sizes:
    customers: int
    events: int  # track lines in the import file
    api_events: int  # per gunicorn round, warm-up not included


FULL = Sizes(customers=20_000, events=300_000, api_events=100_000)
QUICK = Sizes(customers=2_000, events=30_000, api_events=10_000)


# --- Synthetic usage data ---------------------------------------------------

PATHS = ("/", "/dashboard", "/reports", "/settings", "/billing", "/team", "/integrations")
FEATURES = ("reports", "export", "automations", "dashboards", "api", "alerts", "sso")
PLANS = ("starter", "pro", "business")
ZONES = ("Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "UTC")
Properties = Callable[[random.Random], dict[str, Any]]
# (event, relative frequency, properties): the mix of a B2B SaaS product.
EVENT_MIX: tuple[tuple[str, int, Properties], ...] = (
    ("page_viewed", 45, lambda rng: {"path": rng.choice(PATHS)}),
    (
        "feature_used",
        30,
        lambda rng: {"feature": rng.choice(FEATURES), "duration_ms": rng.randint(50, 30_000)},
    ),
    ("login", 18, lambda rng: {"method": rng.choice(("password", "sso", "magic_link"))}),
    ("report_exported", 4, lambda rng: {"format": rng.choice(("csv", "pdf", "xlsx"))}),
    ("invite_sent", 2, lambda rng: {"role": rng.choice(("admin", "member", "viewer"))}),
    ("subscription_renewed", 1, lambda rng: {"plan": rng.choice(PLANS), "mrr": 49}),
)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Track(NamedTuple):
    user_id: str
    event: str
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str

    def item(self) -> dict[str, Any]:
        return {
            "type": "track",
            "userId": self.user_id,
            "event": self.event,
            "properties": self.properties,
            "timestamp": iso(self.timestamp),
            "messageId": self.message_id,
        }


class Traffic:
    """Seeded synthetic usage: customers whose activity is skewed (a few are
    far busier than most), events from `EVENT_MIX`, Segment-style messageIds."""

    def __init__(self, *, customers: int, now: datetime, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.user_ids = [f"cust_{i:06d}" for i in range(customers)]
        self._activity = list(accumulate(self.rng.lognormvariate(0, 1) for _ in self.user_ids))
        self._mix = list(accumulate(weight for _, weight, _ in EVENT_MIX))

    def message_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def tracks(self, count: int, *, within: timedelta) -> list[Track]:
        """`count` events at random moments in the `within` before now."""
        users = self.rng.choices(self.user_ids, cum_weights=self._activity, k=count)
        kinds = self.rng.choices(EVENT_MIX, cum_weights=self._mix, k=count)
        return [
            Track(
                user,
                name,
                properties(self.rng),
                self.now - within * self.rng.random(),
                self.message_id(),
            )
            for user, (name, _, properties) in zip(users, kinds, strict=True)
        ]

    def identify(self, user_id: str) -> tuple[datetime, dict[str, Any]]:
        """A customer's identify call, dated before the history so a file
        sorted by time declares its customers first, as exports do."""
        moment = self.now - HISTORY - timedelta(days=30) * self.rng.random()
        traits = {
            "email": f"{user_id}@example.com",
            "plan": self.rng.choice(PLANS),
            "timezone": self.rng.choice(ZONES),
            "mrr": self.rng.choice((29, 49, 99, 299)),
            "signed_up_at": iso(moment),
        }
        item = {"type": "identify", "userId": user_id, "traits": traits}
        return moment, item | {"timestamp": iso(moment), "messageId": self.message_id()}

    def batch_bodies(self, batches: int) -> list[bytes]:
        """API request bodies of `BATCH` live events (the last five minutes)."""
        return [
            compact_json(
                {"batch": [t.item() for t in self.tracks(BATCH, within=timedelta(minutes=5))]}
            ).encode()
            for _ in range(batches)
        ]


@dataclass(frozen=True)
class Dataset:
    path: Path
    lines: int
    customers: int  # each has an identify line
    tracks: list[Track]


def write_dataset(path: Path, traffic: Traffic, sizes: Sizes) -> Dataset:
    """The import file: an identify per customer and `sizes.events` tracks, in
    time order, one JSON object per line."""
    with step(f"generate {path.name} ({sizes.events:,} tracks, {sizes.customers:,} customers)"):
        tracks = traffic.tracks(sizes.events, within=HISTORY)
        lines = [traffic.identify(user_id) for user_id in traffic.user_ids]
        lines += [(t.timestamp, t.item()) for t in tracks]
        lines.sort(key=lambda line: line[0])
        with path.open("w") as f:
            f.writelines(compact_json(item) + "\n" for _, item in lines)
    return Dataset(path=path, lines=len(lines), customers=len(traffic.user_ids), tracks=tracks)


# --- Measurements -----------------------------------------------------------


def scalar(bench: Bench, sql: str) -> Any:
    with bench.connect() as conn:
        return conn.execute(sql).fetchone()[0]


def event_count(bench: Bench) -> int:
    return scalar(bench, "SELECT count(*) FROM customers_event")


@dataclass(frozen=True)
class ImportRun:
    seconds: float
    events_added: int
    summary: str  # the command's own last line


def import_once(bench: Bench, dataset: Dataset, label: str) -> ImportRun:
    bench.settle()
    before = event_count(bench)
    with step(f"import_events, {label}") as watch:
        done = bench.manage("import_events", str(dataset.path), "--no-progress")
    return ImportRun(watch.seconds, event_count(bench) - before, done.stdout.strip())


def measure_import(bench: Bench, dataset: Dataset) -> tuple[list[Row], list[str], float]:
    """import_events twice over the same file: rows, notes and the first
    pass's events/s."""
    first = import_once(bench, dataset, "first pass")
    again = import_once(bench, dataset, "re-run (every line already stored)")
    rate = len(dataset.tracks) / first.seconds
    customers = scalar(bench, "SELECT count(*) FROM customers_customer")
    rows = [
        at_least("import_events: events stored/s, first pass", rate, "events/s", IMPORT_TARGET),
        measured(
            "import_events: lines/s, re-run (all duplicates)",
            f"{number(dataset.lines / again.seconds)} lines/s",
        ),
        check(
            "import_events: events stored (first pass, re-run); customers",
            (first.events_added, again.events_added, customers)
            == (len(dataset.tracks), 0, dataset.customers),
            found=f"{first.events_added:,}, {again.events_added:,}; {customers:,}",
            expected=f"{len(dataset.tracks):,}, 0; {dataset.customers:,}",
        ),
    ]
    notes = [
        f"import_events: {dataset.lines:,} lines ({len(dataset.tracks):,} tracks, "
        f"{dataset.customers:,} identifies); the times are the wall time of the whole command, "
        f"Python and Django start-up included: {first.seconds:.1f}s first pass, "
        f"{again.seconds:.1f}s re-run. The command's own summary of the first pass: "
        f"`{first.summary}`",
    ]
    return rows, notes, rate


# --- The raw PostgreSQL ceiling ---------------------------------------------

EVENT_COLUMNS = "customer_id, name, properties, occurred_at, received_at, message_id"
SCRATCH = "bench_scratch_event"
RawRow = tuple[int, str, str, datetime, datetime, str]


def raw_rows(bench: Bench, tracks: Sequence[Track]) -> list[RawRow]:
    """The import's events as `customers_event` rows, ready to send."""
    received_at = datetime.now(UTC)
    with bench.connect() as conn:
        ids = dict(conn.execute("SELECT external_id, id FROM customers_customer").fetchall())
    return [
        (
            ids[t.user_id],
            t.event,
            compact_json(t.properties),
            t.timestamp,
            received_at,
            t.message_id,
        )
        for t in tracks
    ]


def chunked(rows: Sequence, size: int) -> Iterable[Sequence]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def copy_rows(conn: psycopg.Connection, rows: Sequence[RawRow], *, per_transaction: int) -> None:
    for chunk in chunked(rows, per_transaction):
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY {SCRATCH} ({EVENT_COLUMNS}) FROM STDIN") as copy,
        ):
            for row in chunk:
                copy.write_row(row)


def insert_rows(conn: psycopg.Connection, rows: Sequence[RawRow], *, per_statement: int) -> None:
    placeholder = "(%s, %s, %s::jsonb, %s, %s, %s)"
    with conn.transaction(), conn.cursor() as cursor:
        for chunk in chunked(rows, per_statement):
            values = ", ".join([placeholder] * len(chunk))
            cursor.execute(
                f"INSERT INTO {SCRATCH} ({EVENT_COLUMNS}) VALUES {values}",
                [value for row in chunk for value in row],
            )


Writer = Callable[[psycopg.Connection, Sequence[RawRow]], None]
CEILINGS: tuple[tuple[str, Writer], ...] = (
    ("COPY, one transaction", partial(copy_rows, per_transaction=10**9)),
    ("multi-row INSERT, 1,000 rows/statement", partial(insert_rows, per_statement=1000)),
    ("COPY, 100 rows per transaction", partial(copy_rows, per_transaction=BATCH)),
)


@contextmanager
def scratch_table(conn: psycopg.Connection) -> Iterator[None]:
    """An empty twin of `customers_event`: same columns, defaults, indexes,
    unique and foreign keys."""
    conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
    conn.execute(f"CREATE TABLE {SCRATCH} (LIKE customers_event INCLUDING ALL)")
    conn.execute(
        f"ALTER TABLE {SCRATCH} ADD FOREIGN KEY (customer_id) "
        "REFERENCES customers_customer (id) DEFERRABLE INITIALLY DEFERRED"
    )
    try:
        yield
    finally:
        conn.execute(f"DROP TABLE {SCRATCH}")


def measure_ceilings(bench: Bench, rows: Sequence[RawRow]) -> dict[str, float]:
    """Rows/s PostgreSQL takes for the same events, by each way of sending them."""
    rates = {}
    for label, write in CEILINGS:
        bench.settle()
        with bench.connect() as conn, scratch_table(conn):
            with step(f"raw PostgreSQL: {label}, {len(rows):,} rows") as watch:
                write(conn, rows)
            rates[label] = len(rows) / watch.seconds
    return rates


# --- The batch API ----------------------------------------------------------


def accepted_whole_batch(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    try:
        answer = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if answer.get("accepted") != BATCH or answer.get("errors"):
        return f"accepted {answer.get('accepted')}, errors {answer.get('errors')}"
    return None


@dataclass(frozen=True)
class ApiRound:
    workers: int
    clients: int
    load: LoadResult  # the timed requests
    problems: list[str]  # warm-up included
    sent: int  # events, warm-up included
    stored: int  # rows the event table grew by

    @property
    def rate(self) -> float:
        return self.load.requests * BATCH / self.load.seconds


def api_round(bench: Bench, traffic: Traffic, sizes: Sizes, *, workers: int, key: str) -> ApiRound:
    """One gunicorn with `workers` sync workers, `CLIENTS_PER_WORKER` client
    threads each, a short warm-up, then `sizes.api_events` events in batches
    of `BATCH`."""
    clients = workers * CLIENTS_PER_WORKER
    warmup = traffic.batch_bodies(clients * WARMUP_BATCHES_PER_CLIENT)
    bodies = traffic.batch_bodies(sizes.api_events // BATCH)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    post = partial(
        post_concurrently,
        path="/api/v1/batch",
        headers=headers,
        clients=clients,
        validate=accepted_whole_batch,
    )
    bench.settle()
    before = event_count(bench)
    with gunicorn(bench, workers=workers) as port:
        warm = post(port, bodies=warmup)
        load = post(port, bodies=bodies, label=f"batch API, {workers} workers")
    return ApiRound(
        workers,
        clients,
        load,
        problems=warm.problems + load.problems,
        sent=(len(warmup) + len(bodies)) * BATCH,
        stored=event_count(bench) - before,
    )


def api_rows(rounds: Sequence[ApiRound]) -> list[Row]:
    rows = []
    for r in rounds:
        label = f"batch API, {r.workers} sync workers, {r.clients} clients"
        latency = " / ".join(f"{r.load.percentile(p) * 1000:.0f}" for p in (50, 95, 99))
        rows += [
            at_least(f"{label}: events/s", r.rate, "events/s", API_TARGET),
            measured(f"{label}: latency p50 / p95 / p99", f"{latency} ms"),
        ]
    problems = [p for r in rounds for p in r.problems]
    requests = sum(r.sent for r in rounds) // BATCH
    sent, stored = sum(r.sent for r in rounds), sum(r.stored for r in rounds)
    rows += [
        check(
            "batch API: every response 200, accepted = 100, no errors",
            not problems,
            found=f"{requests - len(problems):,} of {requests:,} requests"
            + (f" (first problem: {problems[0]})" if problems else ""),
            expected=f"{requests:,} of {requests:,}",
        ),
        check(
            "batch API: events stored = events sent",
            stored == sent,
            found=f"{stored:,}",
            expected=f"{sent:,}",
        ),
    ]
    return rows


def measure_api(bench: Bench, traffic: Traffic, sizes: Sizes) -> list[ApiRound]:
    bench.django()
    from apps.customers.services import api_key_create

    _, key = api_key_create(name="bench")
    return [api_round(bench, traffic, sizes, workers=workers, key=key) for workers in WORKER_COUNTS]


# --- EventStat --------------------------------------------------------------

EVENTSTAT_MISMATCHES = """
SELECT count(*) FILTER (
           WHERE s.customer_id IS NULL OR e.customer_id IS NULL OR e.count <> s.count
              OR e.first_at <> s.first_at OR e.last_at <> s.last_at),
       count(*)
FROM (SELECT customer_id, name, count(*) AS count,
             min(occurred_at) AS first_at, max(occurred_at) AS last_at
      FROM customers_event GROUP BY customer_id, name) AS e
FULL JOIN customers_eventstat AS s
       ON s.customer_id = e.customer_id AND s.name = e.name
"""


def eventstat_row(bench: Bench) -> Row:
    with bench.connect() as conn:
        mismatches, pairs = conn.execute(EVENTSTAT_MISMATCHES).fetchone()
    return check(
        "EventStat = Event aggregate (count, first, last per customer and event)",
        mismatches == 0 and pairs > 0,
        found=f"{mismatches:,} mismatches in {pairs:,} pairs",
        expected="0 mismatches",
    )


# --- The workload -----------------------------------------------------------


@workload("ingestion", "usage data in (import_events, batch API) vs raw PostgreSQL")
def run(bench: Bench) -> Result:
    """Usage data coming in, end to end, on a fresh database.

    1. **import_events.** A seeded JSONL file: an identify per customer, then
       Segment-style track calls (page_viewed, feature_used, login, … with
       small properties and a messageId each) spread over the last 90 days and
       skewed over the customers (a few are far busier than most), in time
       order. Timed: the whole `manage.py import_events FILE --no-progress`
       subprocess, then the same again, when every line is a duplicate.
    2. **Raw PostgreSQL.** The same event rows written straight into an empty
       twin of `customers_event` (same columns, defaults, indexes, unique and
       foreign keys): PostgreSQL's own ceiling on this machine. It leaves out
       what Tenure adds: JSON parsing and validation, customer upserts,
       deduplication and the EventStat upsert.
    3. **Batch API.** gunicorn as the Procfile runs it (sync workers, access
       log on), with 2, 3 and 4 workers in turn, serving `POST /api/v1/batch`;
       fresh events in batches of 100 from one client thread per worker, after
       a short warm-up. Sync workers close the connection after each response,
       so every request opens a new loopback connection, as a client behind a
       load balancer would. Every response is checked, and so is the row
       count.
    4. **EventStat** compared with the aggregate of all stored events (count,
       first and last per customer and event name), in one SQL statement."""
    sizes = QUICK if bench.quick else FULL
    bench.fresh_database()
    traffic = Traffic(customers=sizes.customers, now=datetime.now(UTC))
    dataset = write_dataset(bench.path("events.jsonl"), traffic, sizes)

    import_rows, notes, import_rate = measure_import(bench, dataset)
    ceilings = measure_ceilings(bench, raw_rows(bench, dataset.tracks))
    rounds = measure_api(bench, traffic, sizes)
    best = max(rounds, key=lambda r: r.rate)
    copy_rate = ceilings[CEILINGS[0][0]]

    result = Result(rows=import_rows + api_rows(rounds), notes=[sizes_note(sizes), *notes])
    result.rows += [
        measured(f"raw PostgreSQL: {label}", f"{number(rate)} rows/s")
        for label, rate in ceilings.items()
    ]
    result.rows += [
        ratio("import_events, first pass, vs raw COPY", import_rate, copy_rate, "raw COPY"),
        ratio(
            f"batch API, best ({best.workers} workers), vs raw COPY",
            best.rate,
            copy_rate,
            "raw COPY",
        ),
        eventstat_row(bench),
    ]
    result.notes += api_notes(rounds, best)
    return result


def sizes_note(sizes: Sizes) -> str:
    label = "--quick sizes" if sizes == QUICK else "full sizes"
    return (
        f"{label}: {sizes.customers:,} customers, {sizes.events:,} track events in the import "
        f"file, {sizes.api_events:,} events per batch API round."
    )


def api_notes(rounds: Sequence[ApiRound], best: ApiRound) -> list[str]:
    """Which worker count to run here, from this run's figures: the fewest
    workers whose throughput is within `SAME_THROUGHPUT` of the best (fewer
    workers queue less, so their latency is lower)."""
    tried = ", ".join(f"{r.workers} → {number(r.rate)} events/s" for r in rounds)
    close = [r for r in rounds if r.rate >= SAME_THROUGHPUT * best.rate]
    pick = min(close, key=lambda r: r.workers)
    p95 = pick.load.percentile(95) * 1000
    return [
        f"gunicorn sync workers tried: {tried}. The cores are shared by gunicorn, PostgreSQL "
        "and the load client; a worker waits on PostgreSQL (row locks, commit) for part of "
        "each request, so a worker more than the cores can overlap those waits, and beyond "
        "that workers only queue for the CPU. "
        f"Within {1 - SAME_THROUGHPUT:.0%} of the best throughput: "
        f"{', '.join(str(r.workers) for r in close)} workers; the fewest, {pick.workers}, "
        f"answers fastest (p95 {p95:.0f} ms), so {pick.workers} is the setting for a machine "
        "like this one.",
        f"Each round: {rounds[0].load.requests:,} timed requests of {BATCH} events after "
        f"{WARMUP_BATCHES_PER_CLIENT} warm-up requests per client; rounds run one after the "
        "other on the same database, which grows by each round's events.",
    ]
