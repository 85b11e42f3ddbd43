"""Workload "tracking": the open pixel and the click redirect under load on
loopback, the processing of what they recorded, and SendGrid's event webhook
taking batches of 1,000 events, then their processing."""

import base64
import json
import multiprocessing
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    step,
    workload,
)

SEED = 20_261_121
RATE_TARGET = 1_000  # requests/s the pixel and the redirect must sustain...
P95_TARGET_MS = 20.0  # ...with this p95
# The paced rounds offer 5 % more than the target: a round paced at exactly
# the target measures a hair under it (the last request's own latency ends
# the round), a miss by rounding even when the server keeps up.
PACED_RATE = RATE_TARGET * 1.05
WEBHOOK_TARGET = 5_000  # SendGrid events/s, in batches of WEBHOOK_BATCH
WEBHOOK_BATCH = 1_000
# gunicorn sync workers: one request each at a time; a worker waits on
# PostgreSQL for part of each request (the INSERT's round trip), so more
# workers than the 2 cores of the reference machine overlap those waits.
PIXEL_WORKERS = 4
WEBHOOK_WORKERS = 2
WEBHOOK_CLIENTS = 2
# Load clients: processes (no shared GIL with each other) x threads.
CLIENT_PROCESSES = 2
CLIENT_THREADS = 8
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
SCANNER_SHARE = 0.05  # of clicks
LINKS_PER_EMAIL = 3


@dataclass(frozen=True)
class Sizes:
    messages: int  # emails for the pixel and the redirect
    paced_requests: int  # per paced round (opens, clicks), at RATE_TARGET
    flat_out_requests: int  # the round as fast as it goes
    webhook_messages: int  # emails the SendGrid events are about
    webhook_events: int


FULL = Sizes(
    messages=20_000,
    paced_requests=20_000,
    flat_out_requests=20_000,
    webhook_messages=20_000,
    webhook_events=100_000,
)
QUICK = Sizes(
    messages=2_000,
    paced_requests=3_000,
    flat_out_requests=3_000,
    webhook_messages=2_000,
    webhook_events=10_000,
)


# --- the data -----------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    pixel_ids: list[int]  # message ids, for the pixel and the redirect
    webhook: list[tuple[int, str, str]]  # (message id, to address, provider message id)


def seed(bench: Bench, sizes: Sizes, *, now: datetime) -> Seeded:
    """Customers and emails delivered an hour ago (so no click comes "too
    soon"), each with its tracked links, written in bulk in-process."""
    from apps.customers.models import Customer
    from apps.messaging.models import Category, Channel, Message
    from apps.tracking.models import TrackedLink

    total = sizes.messages + sizes.webhook_messages
    with step(f"seed {total:,} customers and emails with {LINKS_PER_EMAIL} links each"):
        Customer.objects.bulk_create(
            [
                Customer(external_id=f"bench-{i:06d}", email=f"bench-{i:06d}@example.com")
                for i in range(total)
            ],
            batch_size=5_000,
        )
        customers = list(Customer.objects.order_by("id").values_list("id", "email"))
        sent = now - timedelta(hours=1)
        Message.objects.bulk_create(
            [
                Message(
                    customer_id=cid,
                    channel=Channel.EMAIL,
                    category=Category.MARKETING,
                    journey="bench",
                    node_id="email",
                    idempotency_key=f"bench:{i}",
                    to_address=email,
                    subject="Bench",
                    status=Message.Status.SENT,
                    provider="sendgrid",
                    provider_message_id=f"benchsg{i:07d}",
                    created_at=sent,
                    sent_at=sent,
                )
                for i, (cid, email) in enumerate(customers)
            ],
            batch_size=5_000,
        )
        rows = list(
            Message.objects.order_by("id").values_list("id", "to_address", "provider_message_id")
        )
        pixel = [mid for mid, _, _ in rows[: sizes.messages]]
        TrackedLink.objects.bulk_create(
            [
                TrackedLink(message_id=mid, position=p, url=f"https://example.com/{mid}/{p}")
                for mid in pixel
                for p in range(LINKS_PER_EMAIL)
            ],
            batch_size=5_000,
        )
    return Seeded(pixel_ids=pixel, webhook=rows[sizes.messages :])


# --- a lean HTTP load client ----------------------------------------------------


def _get(path: str, agent: str, *, method: str = "GET") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode()


def _post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _exchange(port: int, request: bytes) -> bytes:
    """One request on a new connection (gunicorn's sync workers close every
    connection after its response); the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _status(response: bytes) -> int:
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def _client(args: tuple) -> list[tuple[float, int]]:
    """A load client process: `threads` threads share `requests`; with a
    `rate` each request has a due time (start + its index / rate) and its
    latency counts from then, so a server falling behind shows as latency
    (no coordinated omission); without one they go back to back."""
    import threading

    port, requests, first_index, stride, rate, start, threads = args
    out: list[tuple[float, int]] = []
    lock = threading.Lock()

    def worker(mine: Sequence[tuple[int, bytes]]) -> None:
        results = []
        # Flat out too, nothing goes before `start`: the round is timed from it.
        time.sleep(max(0.0, start - time.perf_counter()))
        for index, request in mine:
            due = start + index / rate if rate else None
            if due is not None:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            began = due if due is not None else time.perf_counter()
            try:
                status = _status(_exchange(port, request))
            except OSError:
                status = 0
            results.append((time.perf_counter() - began, status))
        with lock:
            out.extend(results)

    indexed = [(first_index + i * stride, r) for i, r in enumerate(requests)]
    pool = [threading.Thread(target=worker, args=(indexed[t::threads],)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, p: float) -> float:
        ordered = sorted(self.latencies)
        rank = max(1, round(p / 100 * len(ordered)))
        return ordered[rank - 1] * 1000


def load(
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float | None,
    processes: int = CLIENT_PROCESSES,
    threads: int = CLIENT_THREADS,
) -> Load:
    """Send `requests` from `processes` x `threads` clients, at `rate` per
    second overall or flat out."""
    start = time.perf_counter() + 0.5  # every process started before the first is due
    shares = [
        (port, list(requests[p::processes]), p, processes, rate, start, threads)
        for p in range(processes)
    ]
    # fork: the children only use sockets and the bytes they were given.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        began = time.perf_counter()
        outcomes = pool.map(_client, shares)
        ended = time.perf_counter()
    results = [r for outcome in outcomes for r in outcome]
    seconds = ended - max(began, start)
    return Load(
        requests=len(results),
        seconds=seconds,
        latencies=[latency for latency, _ in results],
        statuses=Counter(status for _, status in results),
    )


# --- opens and clicks -------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    requests: list[bytes]
    kind: str  # "open" or "click"
    scanner: int  # requests with a scanner's user agent
    opened: set[int]  # messages opened by a person
    clicked: set[tuple[int, int]]  # (message, link) clicked by a person


def opens(rng: random.Random, ids: Sequence[int], count: int) -> Traffic:
    from apps.tracking.tokens import open_token

    chosen = [rng.choice(ids) for _ in range(count)]
    return Traffic(
        [_get(f"/t/o/{open_token(mid)}", BROWSER) for mid in chosen], "open", 0, set(chosen), set()
    )


def clicks(rng: random.Random, ids: Sequence[int], count: int) -> Traffic:
    from apps.tracking.tokens import click_token

    requests, scanner, clicked = [], 0, set()
    for _ in range(count):
        mid, position = rng.choice(ids), rng.randrange(LINKS_PER_EMAIL)
        is_scanner = rng.random() < SCANNER_SHARE
        scanner += is_scanner
        if not is_scanner:
            clicked.add((mid, position))
        agent = SCANNER if is_scanner else BROWSER
        requests.append(_get(f"/t/c/{click_token(mid, position)}", agent))
    return Traffic(requests, "click", scanner, set(), clicked)


def load_rows(label: str, result: Load, *, paced: bool) -> list[Row]:
    latency = " / ".join(f"{result.percentile_ms(p):.1f}" for p in (50, 95, 99))
    rows = [measured(f"{label}: latency p50 / p95 / p99", f"{latency} ms")]
    if paced:
        rows += [
            at_least(f"{label}: requests/s sustained", result.rate, "req/s", RATE_TARGET),
            at_most(f"{label}: p95 latency", result.percentile_ms(95), "ms", P95_TARGET_MS),
        ]
    else:
        rows.append(measured(f"{label}: requests/s", f"{number(result.rate)} req/s"))
    return rows


class CpuMeter:
    """CPU time (user + system, from /proc) of the gunicorn processes serving
    `port` and of the PostgreSQL backends of the bench database, from its
    creation to `rows()`: what a request costs whatever else the machine is
    doing (the load client and other programs are not counted), so the
    capacity of the cores can be estimated even on a busy machine."""

    def __init__(self, bench: Bench, port: int) -> None:
        self.bench, self.port = bench, port
        self.start = self._sample()

    @staticmethod
    def _cpu(pids: Sequence[int]) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def _gunicorn_pids(self) -> list[int]:
        bind = f"--bind=127.0.0.1:{self.port}".encode()
        master = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and bind in _read(p / "cmdline")
        ]
        children = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and (stat := _read(p / "stat"))
            and int(stat.rsplit(b")", 1)[1].split()[1]) in master
        ]
        return master + children

    def _postgres_pids(self) -> list[int]:
        from . import harness

        with self.bench.connect() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [harness.DB_NAME],
            ).fetchall()
        return [pid for (pid,) in rows]

    def _sample(self) -> dict[str, dict[int, float]]:
        pids = {"gunicorn": self._gunicorn_pids(), "postgres": self._postgres_pids()}
        return {name: {pid: self._cpu([pid]) for pid in found} for name, found in pids.items()}

    def rows(self, label: str, *, requests: int) -> list[Row]:
        end = self._sample()
        spent = {
            name: sum(cpu - self.start[name].get(pid, 0.0) for pid, cpu in end[name].items())
            for name in end
        }
        web, db = (spent[name] / requests * 1000 for name in ("gunicorn", "postgres"))
        cores = os.cpu_count() or 1
        return [
            measured(
                f"{label}: CPU per request, gunicorn + PostgreSQL",
                f"{web:.2f} + {db:.2f} ms",
            ),
            measured(
                f"{label}: capacity of {cores} cores at that cost (load client aside)",
                f"{number(cores * 1000 / (web + db))} req/s",
            ),
        ]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def expected_status(kind: str) -> int:
    return 200 if kind == "open" else 302


def measure_hits(bench: Bench, seeded: Seeded, sizes: Sizes) -> tuple[list[Row], list[str]]:
    from apps.tracking.models import Engagement

    rng = random.Random(SEED)
    warm = opens(rng, seeded.pixel_ids, 200)
    ids, paced = seeded.pixel_ids, sizes.paced_requests
    pace = f"{PACED_RATE:,.0f}"
    rounds = [
        (f"open pixel, paced at {pace} req/s", opens(rng, ids, paced), True),
        (f"click redirect, paced at {pace} req/s", clicks(rng, ids, paced), True),
        ("open pixel, flat out", opens(rng, ids, sizes.flat_out_requests), False),
    ]
    rows: list[Row] = []
    bad: list[str] = []
    bench.settle()
    with gunicorn(bench, workers=PIXEL_WORKERS) as port:
        load(port, warm.requests, rate=None)
        for label, traffic, paced in rounds:
            meter = CpuMeter(bench, port)
            with step(f"{label}: {len(traffic.requests):,} requests"):
                result = load(port, traffic.requests, rate=PACED_RATE if paced else None)
            rows += load_rows(label, result, paced=paced)
            rows += meter.rows(label, requests=len(traffic.requests))
            want = expected_status(traffic.kind)
            if result.statuses != Counter({want: len(traffic.requests)}):
                bad.append(f"{label}: {dict(result.statuses)} (expected all {want})")
    sent = len(warm.requests) + sum(len(t.requests) for _, t, _ in rounds)
    stored = Engagement.objects.count()
    rows.append(
        check(
            "pixel and redirect: every answer right (GIF 200 / 302), one row per request",
            not bad and stored == sent,
            found=f"{stored:,} rows for {sent:,} requests" + (f"; {bad[0]}" if bad else ""),
            expected=f"{sent:,} rows, no wrong answer",
        )
    )
    more, notes = process_hits(bench, warm, [t for _, t, _ in rounds])
    return rows + more, notes


def process_hits(
    bench: Bench, warm: Traffic, traffic: Sequence[Traffic]
) -> tuple[list[Row], list[str]]:
    from apps.customers.models import Event
    from apps.tracking.models import Engagement
    from apps.tracking.services.processing import tracking_process

    hits = Engagement.objects.filter(processed_at__isnull=True).count()
    bench.settle()
    with step(f"process {hits:,} opens and clicks (tracking_process, in-process)") as watch:
        result = tracking_process(now=datetime.now(UTC), max_batches=10**6)
    opened = warm.opened.union(*(t.opened for t in traffic))
    clicked = set().union(*(t.clicked for t in traffic))
    scanner = sum(t.scanner for t in traffic)
    found = (
        Engagement.objects.filter(processed_at__isnull=True).count(),
        Engagement.objects.filter(machine=True).count(),
        Event.objects.filter(name="email_opened").count(),
        Event.objects.filter(name="email_clicked").count(),
    )
    expected = (0, scanner, len(opened), len(clicked))
    rows = [
        measured("processing opens and clicks: hits/s", f"{number(hits / watch.seconds)} hits/s"),
        check(
            "processed: none left; machine-flagged = scanner requests; one email_opened per "
            "opened email, one email_clicked per clicked link",
            found == expected,
            found=", ".join(f"{n:,}" for n in found),
            expected=", ".join(f"{n:,}" for n in expected),
        ),
    ]
    notes = [
        f"Processing: {result.hits:,} hits in {watch.seconds:.1f}s, "
        f"{result.events_recorded:,} customer events recorded, {result.machine:,} machine."
    ]
    return rows, notes


# --- SendGrid webhook -------------------------------------------------------------


@dataclass(frozen=True)
class WebhookTraffic:
    bodies: list[bytes]
    unique: int  # distinct sg_event_id
    sent: int  # events in all bodies, repeats included
    engagements: int  # unique events that record an Engagement
    delivered: int  # distinct messages delivered
    suppressed: int  # distinct addresses bounced, complained or unsubscribed


# (event, weight): what a day of SendGrid events of a marketing send looks like.
EVENT_MIX = (
    ("processed", 500),
    ("delivered", 480),
    ("open", 600),
    ("click", 160),
    ("deferred", 60),
    ("bounce", 30),
    ("dropped", 10),
    ("spamreport", 1),
    ("unsubscribe", 6),
    ("group_unsubscribe", 4),
)
REPEAT_SHARE = 0.02  # SendGrid retries: events sent again in a later batch
SUPPRESSING = {"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"}


def webhook_traffic(
    messages: Sequence[tuple[int, str, str]], count: int, *, now: datetime
) -> WebhookTraffic:
    rng = random.Random(SEED + 1)
    kinds, weights = zip(*EVENT_MIX, strict=True)
    events, delivered, suppressed = [], set(), set()
    engagements = 0
    base = int((now - timedelta(minutes=50)).timestamp())
    for n in range(count):
        mid, address, provider_id = rng.choice(messages)
        kind = rng.choices(kinds, weights)[0]
        item = {
            "event": kind,
            "email": address,
            "timestamp": base + rng.randrange(0, 1800),
            "sg_event_id": f"bench-{n:08d}",
            "sg_message_id": f"{provider_id}.filterdrecv-bench-{n % 7}",
            "tenure_message_id": str(mid),
            "category": ["bench"],
        }
        if kind == "open":
            item["useragent"] = BROWSER
            item["sg_machine_open"] = rng.random() < 0.2
        elif kind == "click":
            item["useragent"] = BROWSER
            item["url"] = f"https://example.com/{mid}/0"
        elif kind == "bounce":
            item.update(type="bounce", status="5.1.1", reason="550 5.1.1 no such user")
        elif kind == "dropped":
            item["reason"] = "Bounced Address"
        elif kind == "deferred":
            item["response"] = "451 4.7.1 try again later"
        events.append(item)
        engagements += kind != "processed"
        delivered |= {mid} if kind == "delivered" else set()
        suppressed |= {address} if kind in SUPPRESSING else set()
    repeats = rng.sample(events, int(count * REPEAT_SHARE))
    batches = [events[i : i + WEBHOOK_BATCH] for i in range(0, count, WEBHOOK_BATCH)]
    # Repeats go at the start of later batches, as a retry of an earlier delivery would.
    stream = [e for batch in batches for e in batch] + repeats
    bodies = [
        json.dumps(stream[i : i + WEBHOOK_BATCH], separators=(",", ":")).encode()
        for i in range(0, len(stream), WEBHOOK_BATCH)
    ]
    return WebhookTraffic(bodies, count, len(stream), engagements, len(delivered), len(suppressed))


def key_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def signed_posts(private, bodies: Sequence[bytes]) -> list[bytes]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    requests = []
    for body in bodies:
        timestamp = str(int(time.time()))
        signature = private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        requests.append(_post("/webhooks/sendgrid", body, headers))
    return requests


def measure_webhook(bench: Bench, seeded: Seeded, sizes: Sizes) -> tuple[list[Row], list[str]]:
    from apps.customers.models import Event
    from apps.messaging.models import Suppression
    from apps.tracking.models import Engagement, ProviderEvent
    from apps.tracking.services.processing import tracking_process

    now = datetime.now(UTC)
    traffic = webhook_traffic(seeded.webhook, sizes.webhook_events, now=now)
    private, public = key_pair()
    requests = signed_posts(private, traffic.bodies)
    bench.settle()
    previous = bench.env.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    bench.env["SENDGRID_WEBHOOK_PUBLIC_KEY"] = public
    try:
        label = f"SendGrid webhook: {len(requests):,} batches, {traffic.sent:,} events"
        with gunicorn(bench, workers=WEBHOOK_WORKERS) as port, step(label):
            result = load(port, requests, rate=None, processes=WEBHOOK_CLIENTS, threads=1)
    finally:
        if previous is None:
            bench.env.pop("SENDGRID_WEBHOOK_PUBLIC_KEY")
        else:
            bench.env["SENDGRID_WEBHOOK_PUBLIC_KEY"] = previous
    stored = ProviderEvent.objects.count()
    bench.settle()
    with step(f"process {stored:,} SendGrid events (tracking_process, in-process)") as watch:
        processed = tracking_process(now=datetime.now(UTC), max_batches=10**6)
    latency = " / ".join(f"{result.percentile_ms(p):.0f}" for p in (50, 95, 99))
    found = (
        stored,
        ProviderEvent.objects.filter(processed_at__isnull=True).count(),
        Engagement.objects.filter(source="sendgrid").count(),
        Event.objects.filter(name="email_delivered").count(),
        Suppression.objects.count(),
    )
    expected = (traffic.unique, 0, traffic.engagements, traffic.delivered, traffic.suppressed)
    rows = [
        at_least(
            f"SendGrid webhook, {WEBHOOK_WORKERS} sync workers: events accepted/s "
            f"(batches of {WEBHOOK_BATCH:,})",
            traffic.sent / result.seconds,
            "events/s",
            WEBHOOK_TARGET,
        ),
        measured("SendGrid webhook: latency per batch p50 / p95 / p99", f"{latency} ms"),
        at_least(
            "SendGrid events processed/s (match, move messages, suppress, record events)",
            stored / watch.seconds,
            "events/s",
            WEBHOOK_TARGET,
        ),
        at_least(
            "SendGrid events end to end/s (accepted, then processed)",
            traffic.unique / (result.seconds + watch.seconds),
            "events/s",
            WEBHOOK_TARGET,
        ),
        check(
            "webhook: every batch 200",
            result.statuses == Counter({200: len(requests)}),
            found=", ".join(f"{n:,} x {s}" for s, n in sorted(result.statuses.items())),
            expected=f"{len(requests):,} x 200",
        ),
        check(
            "stored once each; none pending; engagements; email_delivered once per message; "
            "suppressed addresses",
            found == expected,
            found=", ".join(f"{n:,}" for n in found),
            expected=", ".join(f"{n:,}" for n in expected),
        ),
    ]
    notes = [
        f"SendGrid: {traffic.sent:,} events in {len(requests):,} signed batches "
        f"({traffic.sent - traffic.unique:,} repeats of earlier events, as SendGrid's retries "
        f"send them), from {WEBHOOK_CLIENTS} clients. Accepting a batch = verify the ECDSA "
        "signature, parse, skip known event ids, bulk insert; processing is what a "
        f"`tracking` worker then does: {processed.provider_events:,} events in "
        f"{watch.seconds:.1f}s, {processed.events_recorded:,} customer events recorded, "
        f"{processed.messages_moved:,} message status moves, {processed.suppressed:,} "
        "suppressions."
    ]
    return rows, notes


# --- the workload -------------------------------------------------------------------


@workload("tracking", "open pixel, click redirect and SendGrid webhook under load")
def run(bench: Bench) -> Result:
    """Engagement coming back, on loopback, through gunicorn as the Procfile
    runs it (sync workers, access log on), on a fresh database.

    1. **Open pixel and click redirect.** Emails delivered an hour earlier,
       three tracked links each. Signed tokens of random emails, each request
       on a new connection (sync workers close it after the response), from
       a load client of 2 processes x 8 threads; gunicorn serves them through
       the WSGI fast path of `apps/tracking/wsgi.py`. Two rounds *paced* at
       1,050 requests/s, 5 % over the 1,000 target (opens, then clicks; 5 %
       of the clicks from a mail scanner's user agent): each request is due
       at its own time and its latency counts from then, so a server falling
       behind shows up as latency. Then a round of opens as fast as they go.
       Each round reports the CPU time per request of gunicorn and of
       PostgreSQL (read from /proc, so other programs on the machine do not
       count). Every answer is checked, and so is the row count: each request
       writes one row, in one statement.
    2. **Processing them** (`tracking_process`, in-process, as a `tracking`
       worker runs it): messages moved, machine hits flagged, one
       `email_opened` per opened email and one `email_clicked` per clicked
       link recorded as customer events; checked against what was sent.
    3. **SendGrid webhook.** Signed batches of 1,000 events (a day's mix:
       processed, delivered, opens with Apple machine opens, clicks,
       deferrals, bounces, drops, spam reports, unsubscribes; 2 % repeats of
       earlier events) posted from 2 clients; then processed. Checked: each
       event stored once, none left pending, one engagement per event that
       has one, one `email_delivered` per delivered email, one suppression
       per bounced, complaining or unsubscribing address."""
    sizes = QUICK if bench.quick else FULL
    bench.fresh_database()
    bench.django()
    seeded = seed(bench, sizes, now=datetime.now(UTC))
    hit_rows, hit_notes = measure_hits(bench, seeded, sizes)
    webhook_rows, webhook_notes = measure_webhook(bench, seeded, sizes)
    label = "--quick sizes" if sizes == QUICK else "full sizes"
    notes = [
        f"{label}: {sizes.messages:,} emails for the pixel and the redirect, "
        f"{sizes.paced_requests:,} requests per paced round, {sizes.flat_out_requests:,} flat "
        f"out; {sizes.webhook_events:,} SendGrid events about {sizes.webhook_messages:,} "
        f"emails. gunicorn: {PIXEL_WORKERS} sync workers for the pixel and the redirect, "
        f"{WEBHOOK_WORKERS} for the webhook. The load client runs on the same cores as "
        "gunicorn and PostgreSQL.",
        *hit_notes,
        *webhook_notes,
    ]
    return Result(rows=hit_rows + webhook_rows, notes=notes)
