"""The messaging workload (issue 4): messages rendered, checked against the
policies, written and delivered end to end, through a real Celery worker,
Redis and PostgreSQL, to the fake SendGrid + Twilio API on loopback; and the
cost of each stage on its own.

Run as a program (`python -m bench.messaging produce …`) this module is also
the producer: one process sending its share of the messages with
`message_send_many`, one batch of TRANSACTION sends per transaction, as a
journey tick does.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from .harness import (
    ROOT,
    Bench,
    BenchError,
    Result,
    at_least,
    celery_worker,
    check,
    measured,
    number,
    pids_where,
    postgres_cpu,
    process_cpu,
    purge_queues,
    step,
    stop,
    tree_cpu,
    workload,
)

TARGET = 1_000  # messages/s, rendered and delivered end to end
TRANSACTION = 100  # sends per producer transaction
SMS_EVERY = 5  # one customer in five gets an SMS, the others an email


@dataclass(frozen=True)
class Sizes:
    messages: int  # end to end
    sample: int  # per stage measurement


FULL = Sizes(messages=20_000, sample=2_000)
QUICK = Sizes(messages=1_000, sample=200)


@dataclass(frozen=True)
class Layout:
    """How the two cores are shared: producer processes calling
    message_send_many, and the Celery worker's prefork processes delivering."""

    producers: int
    worker_processes: int

    @property
    def label(self) -> str:
        return f"{self.producers} producers + worker --concurrency {self.worker_processes}"

    @property
    def short(self) -> str:
        return f"{self.producers}p/{self.worker_processes}w"


# Tried in turn, each on its own customers; the best is held to the target.
LAYOUTS = (Layout(producers=2, worker_processes=4), Layout(producers=3, worker_processes=3))

EMAIL_SLUG, SMS_SLUG = "bench-renewal", "bench-renewal-sms"
EMAIL_HTML = (
    "<html><body><p>Hi {{ customer.first_name | default('there') }},</p>"
    "<p>Your {{ customer.plan }} plan renews on {{ customer.renewal_day }}. "
    "You have used {{ customer.seats_used }} of {{ customer.seats }} seats this month."
    "</p><p><a href='https://app.example.com/billing'>Review your plan</a></p>"
    "<p style='color:#888'>{{ company.name }}, {{ company.postal_address }}. "
    "<a href='{{ links.unsubscribe }}'>Unsubscribe</a> · "
    "<a href='{{ links.preferences }}'>Preferences</a></p></body></html>"
)
SMS_BODY = (
    "{{ company.name }}: hi {{ customer.first_name | default('there') }}, your "
    "{{ customer.plan }} plan renews on {{ customer.renewal_day }}. Reply STOP to opt out."
)


def delivery_environment(url: str) -> dict[str, str]:
    """Providers pointed at the fake; the rest as in production, except quiet
    hours (off, so the run does not depend on the hour in the customers'
    zones) and the rate limits (high, but on: their Redis round trip counts)."""
    from tests.fakes.provider import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN

    return {
        "EMAIL_PROVIDER": "sendgrid",
        "SMS_PROVIDER": "twilio",
        "SENDGRID_API_KEY": SENDGRID_KEY,
        "SENDGRID_API_HOST": url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": url,
        "PUBLIC_BASE_URL": "https://tenure.example.com",
        "SEND_HOURS_SMS": "",
        "SENDGRID_RATE_PER_SECOND": "100000",
        "TWILIO_RATE_PER_SECOND": "100000",
        "NO_PROXY": "127.0.0.1,localhost",
    }


# --- processes --------------------------------------------------------------------------


FAKE_PIDS: set[int] = set()


@contextmanager
def fake_provider(bench: Bench) -> Iterator[str]:
    """The fake API in its own process (as the real one is elsewhere); yields
    its URL. Its pid is in FAKE_PIDS meanwhile (for its CPU time)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.provider", "--port", "0"],
        cwd=ROOT,
        env=bench.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise BenchError(f"the fake provider did not start (said {url!r})")
        FAKE_PIDS.add(server.pid)
        yield url
    finally:
        FAKE_PIDS.discard(server.pid)
        stop(server, timeout_s=30)


# --- data -------------------------------------------------------------------------------


def seed(customers: int) -> list[int]:
    """Customers with an email, a phone, SMS consent and a few traits; the two
    templates. Returns the customers' ids in order."""
    from django.utils import timezone

    from apps.customers.models import Customer
    from apps.messaging.models import Category, Channel, ConsentRecord, Template

    now = timezone.now()
    Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"bench-{i:07d}",
                email=f"reader{i}@example.com",
                phone=f"+1415{i:07d}",
                timezone=("America/New_York", "Europe/Paris", "Asia/Tokyo", "UTC")[i % 4],
                traits={
                    "first_name": f"Reader{i}",
                    "plan": ("starter", "pro", "business")[i % 3],
                    "renewal_day": f"2026-12-{1 + i % 28:02d}",
                    "seats": 10 + i % 40,
                    "seats_used": 3 + i % 7,
                },
            )
            for i in range(customers)
        ],
        batch_size=5_000,
    )
    ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                customer_id=pk,
                channel=Channel.SMS,
                status=ConsentRecord.Status.GRANTED,
                source=ConsentRecord.Source.DEMO,
                recorded_at=now,
            )
            for pk in ids
        ],
        batch_size=5_000,
    )
    Template.objects.create(
        slug=EMAIL_SLUG,
        name="Renewal reminder",
        channel=Channel.EMAIL,
        category=Category.MARKETING,
        subject="Your {{ customer.plan }} plan renews on {{ customer.renewal_day }}",
        html=EMAIL_HTML,
    )
    Template.objects.create(
        slug=SMS_SLUG,
        name="Renewal reminder (SMS)",
        channel=Channel.SMS,
        category=Category.MARKETING,
        body=SMS_BODY,
    )
    return ids


def template_for(index: int) -> str:
    return SMS_SLUG if index % SMS_EVERY == 0 else EMAIL_SLUG


def produce(customer_ids: list[int], *, key_prefix: str, commit: bool = True) -> None:
    """message_send_many for TRANSACTION customers at a time, one batch per
    transaction, as a journey tick sends (rolled back instead of committed
    with `commit=False`: a timing that leaves nothing behind)."""
    from django.db import transaction
    from django.utils import timezone

    from apps.customers.models import Customer
    from apps.messaging.models import Template
    from apps.messaging.services import SendRequest, message_send_many

    templates = {t.slug: t for t in Template.objects.filter(slug__in=[EMAIL_SLUG, SMS_SLUG])}
    for start in range(0, len(customer_ids), TRANSACTION):
        chunk = customer_ids[start : start + TRANSACTION]
        customers = Customer.objects.in_bulk(chunk)
        with transaction.atomic():
            message_send_many(
                [
                    SendRequest(
                        customer=customers[pk],
                        template=templates[template_for(pk)],
                        idempotency_key=f"{key_prefix}:{pk}",
                    )
                    for pk in chunk
                ],
                now=timezone.now(),
            )
            if not commit:
                transaction.set_rollback(True)


# --- the end-to-end run ----------------------------------------------------------------


@dataclass
class EndToEnd:
    layout: Layout
    messages: int
    emails: int
    seconds: float  # from "go" to the last message sent
    produced_s: float  # from "go" to the last producer done
    statuses: dict[str, int]
    attempts_over_one: int
    latencies: list[float]  # sent_at - created_at, seconds
    fake: dict  # what the fake API saw during this run
    cpu: dict[str, float]  # CPU seconds used during the run, by role

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def fake_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def end_to_end(bench: Bench, url: str, layout: Layout, customer_ids: list[int]) -> EndToEnd:
    from apps.messaging.models import Message

    env = bench.env | delivery_environment(url)
    prefix = f"bench-{layout.producers}p{layout.worker_processes}w"
    purge_queues()
    before = fake_stats(url)
    with ExitStack() as stack:
        worker = stack.enter_context(celery_worker(bench, env, processes=layout.worker_processes))
        producers = []
        for n in range(layout.producers):
            path = bench.path(f"producer-{n}.ids")
            path.write_text(",".join(map(str, sorted(customer_ids[n :: layout.producers]))))
            producers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.messaging", "produce", str(path), prefix],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in producers:
            if proc.stdout.readline().strip() != "ready":
                raise BenchError("a producer did not start")
        with step(f"end to end: {len(customer_ids):,} messages ({layout.label})"):
            cpu_before = server_cpu(worker)
            go = time.time()
            for proc in producers:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            answers = [proc.stdout.readline().split() for proc in producers]
            done = [float(answer[1]) for answer in answers]
            for proc in producers:
                if proc.wait(timeout=60):
                    raise BenchError("a producer failed")
            produced_s = max(done) - go
            deadline = time.monotonic() + max(120, len(customer_ids) / 50)
            mine = Message.objects.filter(idempotency_key__startswith=f"{prefix}:")
            pending = mine.filter(status__in=["queued", "deferred", "sending"])
            while pending.exists():
                if time.monotonic() > deadline:
                    raise BenchError(f"{pending.count()} messages still waiting; see worker.log")
                # The rate ends at the last `sent_at`, whenever this notices;
                # each look costs PostgreSQL ~10 ms while thousands wait, so
                # looking often would only add to the CPU being measured.
                time.sleep(0.5)
            cpu = {
                "producers": sum(float(answer[2]) for answer in answers),
                **{name: used - cpu_before[name] for name, used in server_cpu(worker).items()},
            }
    rows = list(mine.values_list("status", "attempts", "created_at", "sent_at"))
    statuses: dict[str, int] = {}
    for status, *_ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    sent_times = [sent for *_, sent in rows if sent is not None]
    last = max(sent_times).timestamp() if sent_times else time.time()
    after = fake_stats(url)
    return EndToEnd(
        layout=layout,
        messages=len(customer_ids),
        emails=sum(1 for pk in customer_ids if template_for(pk) == EMAIL_SLUG),
        seconds=last - go,
        produced_s=produced_s,
        statuses=statuses,
        attempts_over_one=sum(1 for _, attempts, *_ in rows if attempts > 1),
        latencies=[(sent - created).total_seconds() for _, _, created, sent in rows if sent],
        fake={key: after[key] - before[key] for key in after},
        cpu=cpu,
    )


def server_cpu(worker: subprocess.Popen) -> dict[str, float]:
    """CPU seconds used so far by the processes the end-to-end run keeps
    busy besides the producers: the Celery worker (all its processes), the
    fake API, PostgreSQL (every backend, finished ones included) and Redis."""
    return {
        "worker": tree_cpu(worker.pid),
        "fake API": sum(process_cpu(pid) for pid in FAKE_PIDS),
        "PostgreSQL (whole server)": postgres_cpu(),
        "Redis": sum(process_cpu(pid) for pid in pids_where(b"redis-server")),
    }


def end_to_end_rows(e2e: EndToEnd) -> list:
    """A run's figures, named with its layout (`2p/4w`: 2 producer
    processes, a worker with 4 processes)."""
    name = e2e.layout.short
    sent = e2e.statuses.get("sent", 0)
    latencies = sorted(e2e.latencies) or [0.0]
    fake = e2e.fake
    cpu_ms = sum(e2e.cpu.values()) / e2e.messages * 1000
    return [
        measured(f"end to end, {name}", f"{number(e2e.rate)} messages/s"),
        measured(
            f"{name}: written (message_send_many)", f"{number(e2e.messages / e2e.produced_s)}/s"
        ),
        measured(
            f"{name}: written → sent",
            f"p50 {statistics.median(latencies):.2f} s, "
            f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.2f} s",
        ),
        measured(
            f"{name}: CPU per message",
            " + ".join(f"{role} {used / e2e.messages * 1000:.2f}" for role, used in e2e.cpu.items())
            + f" = {cpu_ms:.2f} ms; {os.cpu_count()} cores at that cost: "
            f"{number(os.cpu_count() * 1000 / cpu_ms)} messages/s at most",
        ),
        check(
            f"{name}: every message sent",
            sent == e2e.messages,
            found=f"{sent:,} of {e2e.messages:,} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(e2e.statuses.items()))
            + ")",
            expected="all",
        ),
        check(
            f"{name}: one provider call each",
            fake["sendgrid"] + fake["twilio"] == e2e.messages
            and fake["duplicates"] == 0
            and fake["unique_message_ids"] == e2e.emails
            and e2e.attempts_over_one == 0,
            found=f"{fake['sendgrid']:,} email + {fake['twilio']:,} SMS requests, "
            f"{fake['duplicates']} duplicate(s)",
            expected=f"{e2e.emails:,} + {e2e.messages - e2e.emails:,}, none twice",
        ),
    ]


# --- stages, one at a time, in this process --------------------------------------------


def per_message_ms(function, items) -> float:
    started = time.perf_counter()
    function(items)
    return (time.perf_counter() - started) / len(items) * 1000


def stages(url: str, customer_ids: list[int]) -> dict[str, float]:
    """Milliseconds per message of each stage alone, one process, no
    contention: render, the policies, message_send_many as a whole (the write is
    what it adds to the two), the provider call (SDK to the fake), and the
    delivery of a committed message (claim, call, record)."""
    from django.conf import settings
    from django.utils import timezone

    from apps.customers.models import Customer
    from apps.messaging import policies
    from apps.messaging.delivery import messages_deliver
    from apps.messaging.models import Message, Template
    from apps.messaging.providers import get_provider
    from apps.messaging.rendering import render

    for name, value in delivery_environment(url).items():
        if hasattr(settings, name):
            setattr(settings, name, type(getattr(settings, name))(value))
    templates = {t.slug: t for t in Template.objects.all()}
    customers = list(Customer.objects.filter(pk__in=customer_ids).order_by("pk"))
    now = timezone.now()

    def render_all(items):
        for c in items:
            render(templates[template_for(c.pk)], customer=c, now=now)

    def evaluate_all(items):
        for start in range(0, len(items), TRANSACTION):
            policies.evaluate_many(
                [
                    policies.Ask(customer=c, template=templates[template_for(c.pk)])
                    for c in items[start : start + TRANSACTION]
                ],
                now=now,
            )

    result = {
        "render": per_message_ms(render_all, customers),
        "policy": per_message_ms(evaluate_all, customers),
        "send (message_send_many)": per_message_ms(
            lambda ids: produce(ids, key_prefix="stage-rolled-back", commit=False), customer_ids
        ),
    }
    whole = result["send (message_send_many)"]
    result["write"] = max(0.0, whole - result["render"] - result["policy"])

    # Committed sends (their publications are purged: this process delivers them).
    produce(customer_ids, key_prefix="stage")
    purge_queues()
    sample = list(Message.objects.filter(idempotency_key__startswith="stage:").order_by("pk"))
    providers = {channel: get_provider(channel) for channel in ("email", "sms")}

    def call_all(items):
        for m in items:
            providers[m.channel].send(m)

    result["provider call"] = per_message_ms(call_all, sample)
    ids = [m.pk for m in sample]
    result["delivery"] = per_message_ms(
        lambda ids: [
            messages_deliver(ids[i : i + 100], now=timezone.now()) for i in range(0, len(ids), 100)
        ],
        ids,
    )
    return result


# --- the workload ----------------------------------------------------------------------


@workload("messaging", "messages rendered and delivered end to end")
def run(bench: Bench) -> Result:
    """Messages sent with `message_send_many` (policies, render, write,
    delivery published on commit) and delivered through a real Celery
    worker, Redis and PostgreSQL, to the fake SendGrid + Twilio API on
    loopback.

    1. **Seed.** Customers with an email, a phone, SMS consent and the traits
       the templates use; a marketing email (HTML with the compliance footer,
       text part derived) and a marketing SMS. One customer in five gets the
       SMS, the others the email.
    2. **End to end.** The fake API runs in its own process; a Celery worker
       (prefork, each delivery task with DELIVERY_CONCURRENCY calls in
       flight) consumes every queue as the Procfile runs it. Producer
       processes call `message_send_many` for their share of the customers,
       a batch of 100 sends per transaction (as a journey tick does); the
       clock starts when they are told to go and stops at the last message's
       `sent_at`. Two ways of sharing the two cores are measured in turn
       (producer processes, worker processes), each on its own customers.
       Rate limits are on (high), quiet hours off so the hour does not
       matter. The CPU each process used meanwhile (from /proc) is divided
       by the messages: what a message costs, and so the rate the cores
       could reach.
    3. **Checks.** Every message ends `sent`, after one attempt; the fake
       received one request per message and no email twice (by our message
       id in `custom_args`).
    4. **Stages.** Each stage alone in this process, on other customers:
       render, the policies (in batches of 100), `message_send_many` as a
       whole (rolled back; the write is what it adds to render and
       policies), one provider call (the SDK to the fake) and one delivery
       (claim, call, record)."""
    sizes = QUICK if bench.quick else FULL
    bench.fresh_database()
    os.environ.update(bench.env)
    bench.django()
    total = sizes.messages * len(LAYOUTS) + sizes.sample
    with step(f"seed {total:,} customers"):
        ids = seed(total)
    shares = [ids[n * sizes.messages : (n + 1) * sizes.messages] for n in range(len(LAYOUTS))]
    stage_ids = ids[sizes.messages * len(LAYOUTS) :]

    runs = []
    with fake_provider(bench) as url:
        for layout, share in zip(LAYOUTS, shares, strict=True):
            bench.settle()
            runs.append(end_to_end(bench, url, layout, share))
        with step("stages, one at a time"):
            costs = stages(url, stage_ids)

    best = max(runs, key=lambda r: r.rate)
    rows = [at_least("end to end (best layout)", best.rate, "messages/s", TARGET)]
    for e2e in runs:
        rows += end_to_end_rows(e2e)
    rows += [measured(f"stage: {name}", f"{value:.2f} ms/message") for name, value in costs.items()]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    # Other work on the machine during the run shows here (the page's header
    # has the load at the start only).
    rows.append(measured("load average at the end (1, 5, 15 min)", load))
    emails = best.emails
    written = best.messages / best.produced_s
    bound = (
        "message_send_many (the producers) bounds the end-to-end rate: delivery kept up with "
        f"what was written ({number(written)}/s written, {number(best.rate)}/s delivered)."
        if best.rate >= 0.9 * written
        else f"Delivery is behind what was written ({number(written)}/s written, "
        f"{number(best.rate)}/s delivered)."
    )
    notes = [
        bound,
        f"{sizes.messages:,} messages per layout ({emails:,} email, "
        f"{sizes.messages - emails:,} SMS), {len(stage_ids):,} per stage measurement. The "
        "fake API runs in its own process; everything shares this machine's cores with "
        "PostgreSQL and Redis.",
        "Stages are single-process wall times without contention; end to end they run at "
        "once on the same cores, so the end-to-end rate is bounded by their sum divided by "
        "the cores, not by the slowest stage. `write` is what message_send_many adds to render "
        "and policies: the insert, the rendered snapshot, post-render hooks (click "
        "tracking) and the publication on commit.",
        "Layouts: `2p/4w` is 2 producer processes and a worker with 4 prefork processes. "
        "Written → sent: from the `now` of the transaction that wrote the message (100 sends "
        "each) to its `sent_at`, so it includes the rest of that transaction.",
    ]
    return Result(rows=rows, notes=notes)


# --- producer process ------------------------------------------------------------------


def _producer_main(ids_path: str, key_prefix: str) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    ids = [int(pk) for pk in Path(ids_path).read_text().split(",") if pk]
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    produce(ids, key_prefix=key_prefix)
    print(f"done {time.time()} {time.process_time() - cpu}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.messaging")
    sub = parser.add_subparsers(dest="command", required=True)
    producer = sub.add_parser("produce")
    producer.add_argument("ids_path")
    producer.add_argument("key_prefix")
    args = parser.parse_args()
    _producer_main(args.ids_path, args.key_prefix)
