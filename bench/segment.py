"""Workload "segment": usage data as Segment and RudderStack SDKs send it
(gzip `/v1/batch`, Basic write-key auth, anonymous visitors who sign up), and
merging anonymous profiles into known customers."""

import base64
import gzip
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from .harness import (
    Bench,
    Result,
    Row,
    at_least,
    at_most,
    check,
    gunicorn,
    measured,
    number,
    post_concurrently,
    ratio,
    step,
    workload,
)
from .ingestion import (
    CEILINGS,
    EVENT_MIX,
    PLANS,
    ZONES,
    Track,
    compact_json,
    event_count,
    iso,
    measure_ceilings,
    raw_rows,
    scalar,
)

SEGMENT_TARGET = 10_000  # events/s through gzip /v1/batch, Basic auth
MERGE_TARGET_S = 5.0  # merging 10,000 anonymous profiles of 20 events each
BATCH = 100
WORKER_COUNTS = (2, 3, 4)
SEED = 20_261_208
LOCALES = ("en-US", "fr-FR", "de-DE", "pt-BR", "es-ES")


@dataclass(frozen=True)
class Sizes:
    customers: int
    events: int  # per gunicorn round
    merges: int  # anonymous profiles merged
    events_per_visitor: int


FULL = Sizes(customers=20_000, events=100_000, merges=10_000, events_per_visitor=20)
QUICK = Sizes(customers=2_000, events=10_000, merges=1_000, events_per_visitor=20)


class SdkTraffic:
    """What analytics.js and the server SDKs put in a batch: a messageId,
    both ids for a signed-in user, context (library, locale, zone, user
    agent, page, campaign, IP), integrations, originalTimestamp and sentAt."""

    def __init__(self, *, customers: int, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.user_ids = [f"cust_{i:06d}" for i in range(customers)]
        self._mix = [weight for _, weight, _ in EVENT_MIX]
        self.anonymous_ids = {
            u: str(uuid.UUID(int=self.rng.getrandbits(128))) for u in self.user_ids
        }

    def item(self, now: datetime) -> dict:
        user = self.rng.choice(self.user_ids)
        name, _, properties = self.rng.choices(EVENT_MIX, weights=self._mix)[0]
        when = now - timedelta(seconds=self.rng.random() * 300)
        base = {
            "userId": user,
            "anonymousId": self.anonymous_ids[user],
            "messageId": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "originalTimestamp": iso(when),
            "timestamp": iso(when),
            "integrations": {"All": True},
            "context": {
                "library": {"name": "analytics.js", "version": "next-1.70.0"},
                "locale": self.rng.choice(LOCALES),
                "timezone": self.rng.choice(ZONES),
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605",
                "ip": "203.0.113.7",
                "page": {"path": "/dashboard", "url": "https://app.example.com/dashboard"},
                "campaign": {"source": "newsletter", "medium": "email"},
            },
        }
        if name == "page_viewed":
            return {**base, "type": "page", "name": "Dashboard", "properties": properties(self.rng)}
        return {**base, "type": "track", "event": name, "properties": properties(self.rng)}

    def bodies(self, batches: int, key: str) -> list[bytes]:
        now = datetime.now(UTC)
        return [
            gzip.compress(
                compact_json(
                    {
                        "batch": [self.item(now) for _ in range(BATCH)],
                        "sentAt": iso(now),
                        "writeKey": key,
                    }
                ).encode(),
                compresslevel=6,
            )
            for _ in range(batches)
        ]


def accepted(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    answer = json.loads(body)
    if answer.get("accepted") != BATCH or answer.get("errors"):
        return f"accepted {answer.get('accepted')}, errors {answer.get('errors')}"
    return None


def seed_customers(bench: Bench, traffic: SdkTraffic) -> None:
    """The known customers, identified as a server SDK would (with their zone
    and locale), so the timed rounds measure the steady state: events for
    customers who exist. (A first call with a context that fills a customer's
    empty zone or locale costs a traits update more, once per customer.)"""
    from apps.customers.schemas import IdentifyIn
    from apps.customers.services import ingest

    with step(f"identify {len(traffic.user_ids):,} customers"):
        for start in range(0, len(traffic.user_ids), 1000):
            ingest(
                [
                    IdentifyIn(
                        userId=u,
                        anonymousId=traffic.anonymous_ids[u],
                        traits={
                            "plan": traffic.rng.choice(PLANS),
                            "email": f"{u}@example.com",
                            "timezone": traffic.rng.choice(ZONES),
                            "locale": traffic.rng.choice(LOCALES),
                        },
                    )
                    for u in traffic.user_ids[start : start + 1000]
                ],
                received_at=datetime.now(UTC),
                source="import",
            )


@dataclass(frozen=True)
class Round:
    workers: int
    rate: float
    p95_ms: float
    problems: list[str]
    sent: int
    stored: int


def segment_round(bench: Bench, traffic: SdkTraffic, sizes: Sizes, *, workers: int, key: str):
    basic = base64.b64encode(f"{key}:".encode()).decode()
    headers = {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Authorization": f"Basic {basic}",
        "User-Agent": "analytics-node-next/latest",
    }
    warmup = traffic.bodies(workers * 2, key)
    bodies = traffic.bodies(sizes.events // BATCH, key)
    post = partial(
        post_concurrently, path="/api/v1/batch", headers=headers, clients=workers, validate=accepted
    )
    bench.settle()
    before = event_count(bench)
    with gunicorn(bench, workers=workers) as port:
        warm = post(port, bodies=warmup)
        load = post(port, bodies=bodies, label=f"gzip /v1/batch, {workers} workers")
    return Round(
        workers,
        load.requests * BATCH / load.seconds,
        load.percentile(95) * 1000,
        warm.problems + load.problems,
        (len(warmup) + len(bodies)) * BATCH,
        event_count(bench) - before,
    )


def measure_merges(bench: Bench, sizes: Sizes) -> tuple[float, int, int]:
    """Anonymous visitors, `events_per_visitor` events each, then identified
    as known customers in batches of 100 identify calls (as the SDKs batch);
    the merges alone are timed. Returns (seconds, merged, events moved)."""
    from apps.customers.models import Customer
    from apps.customers.schemas import IdentifyIn, TrackIn
    from apps.customers.services import ingest

    rng = random.Random(SEED)
    now = datetime.now(UTC)
    visitors = [f"visitor-{i:06d}" for i in range(sizes.merges)]
    users = [f"cust_{rng.randrange(sizes.customers):06d}" for _ in visitors]
    with step(f"{sizes.merges:,} anonymous visitors, {sizes.events_per_visitor} events each"):
        for start in range(0, len(visitors), 100):
            ingest(
                [
                    TrackIn(
                        anonymousId=v,
                        event="page_viewed",
                        properties={"path": "/pricing"},
                        timestamp=now - timedelta(minutes=i + 1),
                    )
                    for v in visitors[start : start + 100]
                    for i in range(sizes.events_per_visitor)
                ],
                received_at=now,
                source="import",
            )
    bench.settle()
    merged = 0
    with step(f"merge {sizes.merges:,} visitors into known customers") as watch:
        for start in range(0, len(visitors), 100):
            result = ingest(
                [
                    IdentifyIn(userId=u, anonymousId=v)
                    for v, u in zip(
                        visitors[start : start + 100], users[start : start + 100], strict=True
                    )
                ],
                received_at=now,
            )
            merged += result.profiles_merged
    left = Customer.objects.filter(
        anonymous_id__in=visitors, merged_into__isnull=True, external_id__isnull=True
    ).count()
    moved = scalar(
        bench,
        "SELECT count(*) FROM customers_event e JOIN customers_customer c ON c.id = e.customer_id "
        "WHERE c.external_id IS NOT NULL AND e.properties->>'path' = '/pricing'",
    )
    return watch.seconds, merged - left, moved


@workload("segment", "Segment/RudderStack SDK traffic (gzip, Basic auth) and profile merges")
def run(bench: Bench) -> Result:
    """Usage data as the Segment and RudderStack SDKs send it.

    1. **Customers.** Known customers identified with their anonymous id, as
       a browser SDK does after sign-in (not timed).
    2. **gzip /v1/batch.** gunicorn (sync workers, as the Procfile runs it)
       with 2, 3 and 4 workers, one client per worker posting gzip bodies of
       100 calls with `Authorization: Basic base64("<key>:")` and `writeKey`,
       `sentAt` and `context` as analytics.js sends them (page and track calls
       with both ids, a messageId, integrations, library, locale, zone, user
       agent, page, campaign and IP). Every response is checked, and the rows.
    3. **Raw PostgreSQL.** The same number of event rows straight into a twin
       of `customers_event` with COPY: the ceiling of this run.
    4. **Merges.** Anonymous visitors with 20 events each, then identify
       calls carrying their anonymous id and a known customer's user id, in
       batches of 100 through `ingest`: the merges (events and stats moved,
       traits kept, records written) are timed."""
    sizes = QUICK if bench.quick else FULL
    bench.fresh_database()
    bench.django()
    from apps.customers.services import api_key_create

    traffic = SdkTraffic(customers=sizes.customers)
    seed_customers(bench, traffic)
    _, key = api_key_create(name="bench-segment")
    rounds = [segment_round(bench, traffic, sizes, workers=w, key=key) for w in WORKER_COUNTS]
    best = max(rounds, key=lambda r: r.rate)

    tracks = [
        Track(item["userId"], item.get("event", "page_viewed"), item["properties"], now, "")
        for now in [datetime.now(UTC)]
        for item in (traffic.item(now) for _ in range(sizes.events))
    ]
    tracks = [t._replace(message_id=str(uuid.uuid4())) for t in tracks]
    ceilings = measure_ceilings(bench, raw_rows(bench, tracks))
    copy_rate = ceilings[CEILINGS[0][0]]

    merge_s, merged, moved = measure_merges(bench, sizes)
    merge_target = MERGE_TARGET_S * sizes.merges / FULL.merges

    rows: list[Row] = []
    for r in rounds:
        label = f"gzip /v1/batch, Basic auth, {r.workers} sync workers"
        rows += [
            at_least(f"{label}: events/s", r.rate, "events/s", SEGMENT_TARGET),
            measured(f"{label}: latency p95", f"{r.p95_ms:.0f} ms"),
        ]
    problems = [p for r in rounds for p in r.problems]
    sent, stored = sum(r.sent for r in rounds), sum(r.stored for r in rounds)
    rows += [
        check(
            "gzip /v1/batch: every response 200, accepted = 100, no errors",
            not problems,
            found="none" if not problems else f"{len(problems)} (first: {problems[0]})",
            expected="none",
        ),
        check("gzip /v1/batch: events stored = events sent", stored == sent,
              found=f"{stored:,}", expected=f"{sent:,}"),
        *(measured(f"raw PostgreSQL: {label}", f"{number(rate)} rows/s")
          for label, rate in ceilings.items()),
        ratio(f"gzip /v1/batch, best ({best.workers} workers), vs raw COPY", best.rate,
              copy_rate, "raw COPY"),
        at_most(f"merge {sizes.merges:,} anonymous profiles ({sizes.events_per_visitor} events "
                "each) into known customers", merge_s, "s", merge_target),
        measured("merges: events moved/s", f"{number(moved / merge_s)} events/s"),
        check("merges: every visitor merged, every event moved", (merged, moved) ==
              (sizes.merges, sizes.merges * sizes.events_per_visitor),
              found=f"{merged:,} merged, {moved:,} events moved",
              expected=f"{sizes.merges:,}, {sizes.merges * sizes.events_per_visitor:,}"),
    ]  # fmt: skip
    notes = [
        f"{'--quick' if bench.quick else 'full'} sizes: {sizes.customers:,} customers, "
        f"{sizes.events:,} events per gunicorn round, {sizes.merges:,} visitors merged.",
        "Bodies are built and gzipped before the clock starts; the server decompresses "
        "(bounded), authenticates the Basic write key, validates each call and stores it.",
    ]
    return Result(rows=rows, notes=notes)
