"""The journeys workload (issue 5): enrolling a million customers from a
segment-entered trigger, and advancing a hundred thousand due enrollments
through a send node with real Celery workers, delivering to the loopback fake
provider; each beside what PostgreSQL itself does with the same rows."""

import json
import os
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from .harness import (
    Bench,
    Result,
    at_least,
    at_most,
    celery_worker,
    check,
    measured,
    number,
    postgres_cpu,
    process_cpu,
    progress,
    purge_queues,
    ratio,
    step,
    tree_cpu,
    workload,
)
from .messaging import FAKE_PIDS, delivery_environment, fake_provider

ENROLL_TARGET_S = 60.0
ADVANCE_TARGET = 2_000  # send steps/s, claimed by the tick and processed by workers
# Celery prefork processes: the engine's queue and the deliveries' each have
# their own worker, so that advancing is not queued behind deliveries.
ENGINE_PROCESSES = 2
DELIVERY_PROCESSES = 2
TICK_EVERY_S = 5.0  # ENGINE_TICK_INTERVAL_S's default: the bench process ticks as beat would
POLL_S = 0.2
SEGMENT = "bench-everyone"
TEMPLATE = "bench-welcome"
HTML = (
    "<p>Hi {{ customer.first_name | default('there') }}, welcome to your {{ customer.plan }} "
    "plan.</p><p style='color:#888'>{{ company.name }}, {{ company.postal_address }}. "
    "<a href='{{ links.unsubscribe }}'>Unsubscribe</a></p>"
)


@dataclass(frozen=True)
class Sizes:
    enroll: int  # customers enrolled at once from a segment
    advance: int  # due enrollments advanced through a send node


FULL = Sizes(enroll=1_000_000, advance=100_000)
QUICK = Sizes(enroll=20_000, advance=2_000)


# --- data ---------------------------------------------------------------------------------

SEED_CUSTOMERS = """
INSERT INTO customers_customer
    (external_id, email, phone, timezone, locale, traits, created_at, updated_at)
SELECT 'bench-' || lpad(i::text, 7, '0'), 'reader' || i || '@example.com', '',
       (ARRAY['America/New_York', 'Europe/Paris', 'Asia/Tokyo', 'UTC'])[1 + i %% 4], '',
       jsonb_build_object('first_name', 'Reader' || i,
                          'plan', (ARRAY['starter', 'pro', 'business'])[1 + i %% 3]),
       now(), now()
FROM generate_series(1, %s) AS i
"""


def seed(bench: Bench, customers: int) -> None:
    with bench.connect() as conn:
        conn.execute(SEED_CUSTOMERS, [customers])
    from apps.messaging.models import Channel, Template
    from apps.segments.models import Segment

    Segment.objects.create(slug=SEGMENT, name="Everyone (bench)", kind=Segment.Kind.STATIC)
    Template.objects.create(
        slug=TEMPLATE,
        name="Welcome (bench)",
        channel=Channel.EMAIL,
        subject="Welcome, {{ customer.first_name | default('there') }}",
        html=HTML,
    )


def journey(slug: str, trigger: dict, nodes: list[dict], *, now: datetime):
    from apps.journeys.services import journey_import

    data = {
        "slug": slug,
        "name": slug,
        "trigger": trigger,
        "reentry": "never",
        "start": nodes[0]["id"],
        "nodes": nodes,
    }
    return journey_import(data, now=now, publish=True)


SEND_THEN_EXIT = [
    {"id": "hello", "type": "email", "template": TEMPLATE, "next": "done"},
    {"id": "done", "type": "exit"},
]


def truncate_enrollments(bench: Bench) -> None:
    with bench.connect() as conn:
        conn.execute("TRUNCATE journeys_enrollmentstep, journeys_enrollment")


# --- 1. enrolling -------------------------------------------------------------------------


@dataclass
class Enrolled:
    customers: int
    seconds: float
    cpu: float  # CPU seconds of this process (Tenure's Python) in the timed call
    enrolled: int
    again_seconds: float
    again_enrolled: int
    raw_seconds: float


RAW_ENROLL = """
INSERT INTO journeys_enrollment (journey_id, journey_version_id, customer_id, state,
    current_node, next_run_at, entered_at, context, is_holdout, lease_token, exit_reason)
SELECT %s, %s, s.id, 'active', 'hello', %s, %s, '{}'::jsonb, false, '', ''
FROM unnest(%s::bigint[]) AS s(id)
"""


def enroll(bench: Bench, customers: int) -> Enrolled:
    """The segment-entered listener (what a refresh's hook calls) with every
    customer's id, timed; the same again (all refused: already active); and
    PostgreSQL writing the same rows with a plain INSERT … SELECT."""
    from django.utils import timezone

    from apps.customers.models import Customer
    from apps.journeys.models import Enrollment
    from apps.journeys.triggers import segment_members_changed
    from apps.segments.models import Segment

    now = timezone.now()
    target = journey(
        "bench-enroll", {"type": "segment_entered", "segment": SEGMENT}, SEND_THEN_EXIT, now=now
    )
    segment = Segment.objects.get(slug=SEGMENT)
    ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    bench.settle()
    with step(f"enroll {len(ids):,} customers (segment entered)") as first:
        cpu = time.process_time()
        segment_members_changed(segment=segment, entered_ids=ids, exited_ids=[], now=now)
        cpu = time.process_time() - cpu
    enrolled = Enrollment.objects.filter(journey=target, state="active").count()
    bench.settle()
    with step("the same ids again (all already active)") as again:
        segment_members_changed(segment=segment, entered_ids=ids, exited_ids=[], now=now)
    again_enrolled = Enrollment.objects.filter(journey=target).count() - enrolled

    truncate_enrollments(bench)
    bench.settle()
    with bench.connect() as conn, step("raw PostgreSQL: INSERT … SELECT of the same rows") as raw:
        conn.execute(RAW_ENROLL, [target.pk, target.live_version_id, now, now, ids])
    truncate_enrollments(bench)
    return Enrolled(
        len(ids), first.seconds, cpu, enrolled, again.seconds, again_enrolled, raw.seconds
    )


# --- 2. advancing -------------------------------------------------------------------------


WAIT_ONLY = [{"id": "pause", "type": "wait", "duration": {"days": 1}}]


@dataclass
class Round:
    enrollments: int
    seconds: float  # first tick → none left due
    claimed: int  # enrollments claimed by all ticks (more than `enrollments`: re-claims)
    ticks: int
    started: float  # time.monotonic() at the first tick
    worker_cpu: float  # CPU seconds of the engine's worker (all its processes)
    tick_cpu: float  # CPU seconds of this process in `engine_tick`


def drive(label: str, target, count: int, engine_pid: int) -> Round:
    """Tick every TICK_EVERY_S, as beat does (the real `engine_tick`,
    publishing the real task), until none of the journey's enrollments is
    due any more; the engine's worker does the rest."""
    from django.utils import timezone

    from apps.journeys.engine import engine_tick
    from apps.journeys.models import Enrollment

    claimed = ticks = 0
    tick_cpu = 0.0
    with step(f"advance {count:,} enrollments: {label}"):
        worker_cpu = tree_cpu(engine_pid)
        started = time.monotonic()
        due = Enrollment.objects.filter(
            journey=target, state="active", next_run_at__lte=timezone.now()
        )
        next_tick = started
        deadline = started + max(900.0, count / 10)
        # Claims, not advances: counting what is still due costs PostgreSQL a
        # scan of the journey's rows, which the measured run would pay for.
        bar = progress(count, "claimed", " enrollments")
        while due.exists():
            now = time.monotonic()
            if now >= next_tick:
                cpu = time.process_time()
                claimed += engine_tick(now=timezone.now()).claimed
                tick_cpu += time.process_time() - cpu
                ticks += 1
                next_tick += TICK_EVERY_S
                bar.update(min(claimed, count) - bar.n)
            if now > deadline:
                raise RuntimeError(f"{due.count():,} still due after {now - started:.0f} s")
            time.sleep(POLL_S)
        seconds = time.monotonic() - started
        worker_cpu = tree_cpu(engine_pid) - worker_cpu
        bar.close()
        return Round(count, seconds, claimed, ticks, started, worker_cpu, tick_cpu)


@dataclass
class Advanced:
    wait: Round  # the engine alone: a wait node
    send: Round  # an email node then an exit
    delivered_seconds: float  # first tick → every message sent
    # CPU seconds by role from the send round's first tick to the last message sent
    cpu: dict[str, float]
    completed: int
    steps: int
    messages: int
    sent: int
    fake: dict
    raw_seconds: float


def advance(bench: Bench, count: int) -> Advanced:
    """Two journeys of `count` due enrollments each, advanced by the tick and
    a Celery worker of ENGINE_PROCESSES processes on the engine's queue
    (`default`), beside one of DELIVERY_PROCESSES on `delivery` and
    `tracking`: first one whose only node is a wait (the engine alone), then
    one of an email node then an exit (policies, render, write; delivery to
    the fake SendGrid by the other worker). Then PostgreSQL writes the second
    one's rows set-based."""
    from django.conf import settings
    from django.utils import timezone

    from apps.customers.models import Customer
    from apps.journeys.enrollment import enrollments_start
    from apps.journeys.models import Enrollment, EnrollmentStep
    from apps.messaging.models import Message

    now = timezone.now()
    waits = journey("bench-wait", {"type": "event", "event": "bench"}, WAIT_ONLY, now=now)
    sends = journey("bench-advance", {"type": "event", "event": "bench"}, SEND_THEN_EXIT, now=now)
    ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True)[: 2 * count])
    with step(f"enroll twice {count:,} customers (not timed)"):
        enrollments_start(journey=waits, customer_ids=ids[count:], now=now)
        enrollments_start(journey=sends, customer_ids=ids[:count], now=now)
    Enrollment.objects.filter(journey=sends).update(next_run_at=now + timedelta(days=365))
    bench.settle()

    with ExitStack() as stack:
        url = stack.enter_context(fake_provider(bench))
        env = bench.env | delivery_environment(url)
        for name, value in delivery_environment(url).items():
            if hasattr(settings, name):
                setattr(settings, name, type(getattr(settings, name))(value))
        purge_queues()
        engine = stack.enter_context(
            celery_worker(
                bench, env, processes=ENGINE_PROCESSES, queues="default", name="worker-engine"
            )
        )
        delivery = stack.enter_context(
            celery_worker(
                bench,
                env,
                processes=DELIVERY_PROCESSES,
                queues="delivery,tracking",
                name="worker-delivery",
            )
        )
        wait_round = drive("a wait node (the engine alone)", waits, count, engine.pid)
        Enrollment.objects.filter(journey=sends).update(next_run_at=timezone.now())
        roles = {
            "engine worker": lambda: tree_cpu(engine.pid),
            "delivery worker": lambda: tree_cpu(delivery.pid),
            "fake API": lambda: sum(process_cpu(pid) for pid in FAKE_PIDS),
            "PostgreSQL (whole server)": postgres_cpu,
        }
        cpu = {role: used() for role, used in roles.items()}
        send_round = drive("an email node, then an exit", sends, count, engine.pid)
        pending = Message.objects.filter(status__in=["queued", "sending", "deferred"])
        deadline = time.monotonic() + max(600.0, count / 10)
        while pending.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending.count():,} messages still waiting; see the logs")
            time.sleep(POLL_S)
        delivered_seconds = time.monotonic() - send_round.started
        cpu = {role: used() - cpu[role] for role, used in roles.items()}
        cpu["tick"] = send_round.tick_cpu
        with urllib.request.urlopen(f"{url}/_fake/stats", timeout=10) as answer:  # noqa: S310
            fake = json.loads(answer.read())

    messages = Message.objects.filter(journey=sends.slug)
    result = Advanced(
        wait=wait_round,
        send=send_round,
        delivered_seconds=delivered_seconds,
        cpu=cpu,
        completed=Enrollment.objects.filter(journey=sends, state="completed").count(),
        steps=EnrollmentStep.objects.filter(enrollment__journey=sends).count(),
        messages=messages.count(),
        sent=messages.filter(status="sent").count(),
        fake=fake,
        raw_seconds=0.0,
    )
    bench.settle()
    result.raw_seconds = raw_advance(bench, sends.pk)
    return result


def raw_advance(bench: Bench, journey_id: int) -> float:
    """PostgreSQL alone writing what advancing wrote, set-based, in one
    transaction rolled back: a step per node (two per enrollment), a message
    per enrollment (a copy of the one written, under another key) and the
    enrollment's new state."""
    from apps.messaging.models import Message

    columns = [f.column for f in Message._meta.concrete_fields if f.column not in ("id",)]
    copied = ", ".join(
        "'raw:' || idempotency_key" if c == "idempotency_key" else c for c in columns
    )
    with bench.connect() as conn:
        started = time.perf_counter()
        with conn.transaction(force_rollback=True):
            conn.execute(
                "INSERT INTO journeys_enrollmentstep (enrollment_id, node_id, visit, started_at, "
                "finished_at, outcome, detail, message_id) "
                "SELECT id, n.node, 2, now(), now(), 'sent', 'sent: email (raw)', NULL "
                "FROM journeys_enrollment, (VALUES ('hello'), ('done')) AS n(node) "
                "WHERE journey_id = %s",
                [journey_id],
            )
            conn.execute(
                f"INSERT INTO messaging_message ({', '.join(columns)}) "
                f"SELECT {copied} FROM messaging_message WHERE journey = 'bench-advance'"
            )
            conn.execute(
                "UPDATE journeys_enrollment SET state = 'exited', finished_at = now(), "
                "current_node = 'done', lease_until = NULL, lease_token = '', "
                "context = context || '{\"raw\": 1}'::jsonb WHERE journey_id = %s",
                [journey_id],
            )
        return time.perf_counter() - started


# --- the workload -------------------------------------------------------------------------


@workload("journeys", "enrolling a million customers, advancing due enrollments")
def run(bench: Bench) -> Result:
    """Journeys at scale on PostgreSQL, in a fresh database whose customers
    are written straight in SQL (ids, an email, a zone, a plan).

    1. **Enrolling.** A live journey triggered by entering a segment; the
       segments' membership listener is called with every customer's id (what
       a refresh that adds them all does). Timed: that call, which is one
       INSERT … SELECT with the re-entry rule and ON CONFLICT on the one-active
       index (and the CPU it took in this process: the rest is PostgreSQL).
       Then the same ids again (all refused), and PostgreSQL's own plain
       INSERT … SELECT of the same rows into the same table and indexes.
    2. **Advancing.** Two journeys of 100,000 enrollments due now. The bench
       process ticks every 5 s, as beat does (the real `engine_tick`: claims
       with SKIP LOCKED and leases, publishes chunks of ENGINE_CHUNK_SIZE, 250
       ids); a Celery worker of 2 processes on the engine's queue advances
       them, beside a worker of 2 processes on the delivery and tracking queues (the
       Procfile's single worker on every queue would queue advancing behind
       deliveries). First a journey whose only node is a wait (the engine
       alone: claim, lock, step, move). Then the target: an email node then
       an exit; a chunk's sends go through one `message_send_many` call
       (policies, render, write; deliveries published on commit), delivered
       by the other worker through the real SendGrid SDK to the fake API on
       loopback. Timed from the first tick to the moment none is due (the
       rate counts send steps; each enrollment also records its exit step),
       and to the moment every message is sent. The engine worker's CPU per
       enrollment (all its processes, from /proc) and the tick's say what a
       core does whatever else runs on the machine; the CPU of every process
       from the first tick to the last message sent (both workers, the fake
       API, PostgreSQL) adds up to what a send step costs the machine, and
       so to the rate its cores could reach. Then PostgreSQL alone
       writes the send journey's rows set-based (two steps and a message per
       enrollment, the enrollment's new state), rolled back.
    3. **Checks.** Everyone enrolled once; every enrollment completed with
       two steps and one message; every message sent; the fake received one
       request per message and none twice."""
    sizes = QUICK if bench.quick else FULL
    bench.fresh_database()
    bench.django()
    with step(f"seed {sizes.enroll:,} customers (SQL)"):
        seed(bench, sizes.enroll)

    enrolled = enroll(bench, sizes.enroll)
    advanced = advance(bench, sizes.advance)

    enroll_rate = enrolled.customers / enrolled.seconds
    raw_enroll_rate = enrolled.customers / enrolled.raw_seconds
    per_10k = 10_000 / enrolled.customers
    count = sizes.advance
    send_rate = count / advanced.send.seconds
    raw_advance_rate = count / advanced.raw_seconds
    reclaimed = advanced.wait.claimed + advanced.send.claimed - 2 * count
    send_cpu_ms = 1000 * advanced.send.worker_cpu / count
    wait_cpu_ms = 1000 * advanced.wait.worker_cpu / count
    tick_cpu_ms = 1000 * (advanced.wait.tick_cpu + advanced.send.tick_cpu) / (2 * count)
    step_cpu_ms = 1000 * sum(advanced.cpu.values()) / count
    rows = [
        at_most(
            f"enroll {enrolled.customers:,} customers (segment entered)",
            enrolled.seconds,
            "s",
            ENROLL_TARGET_S,
            detail=f"({number(enroll_rate)}/s)",
        ),
        measured(
            "enrolling, per 10,000 customers",
            f"{enrolled.seconds * per_10k:.2f} s, of which {enrolled.cpu * per_10k:.3f} s CPU "
            "in Tenure (the rest is PostgreSQL)",
        ),
        measured(
            "raw PostgreSQL: the same rows, plain INSERT … SELECT",
            f"{enrolled.raw_seconds:.1f} s ({number(raw_enroll_rate)}/s)",
        ),
        ratio("enrolling vs raw PostgreSQL", enroll_rate, raw_enroll_rate, "raw rows/s"),
        measured(
            "the same ids again (all already active)",
            f"{enrolled.again_seconds:.1f} s, {enrolled.again_enrolled:,} enrolled",
        ),
        check(
            "everyone enrolled once",
            enrolled.enrolled == enrolled.customers and enrolled.again_enrolled == 0,
            found=f"{enrolled.enrolled:,}, then {enrolled.again_enrolled:,} more",
            expected=f"{enrolled.customers:,}, then 0",
        ),
        at_least(
            f"advance {count:,} due enrollments through a send node",
            send_rate,
            "send steps/s",
            ADVANCE_TARGET,
        ),
        measured(
            "the same, all steps recorded (send + exit)",
            f"{number(advanced.steps / advanced.send.seconds)} steps/s "
            f"over {advanced.send.seconds:.1f} s",
        ),
        measured(
            "engine worker CPU per enrollment (send + exit)",
            f"{send_cpu_ms:.3f} ms ({number(1000 / send_cpu_ms)} send steps/s per core)",
        ),
        measured(
            "CPU per send step, first tick → last message sent",
            " + ".join(f"{role} {used / count * 1000:.2f}" for role, used in advanced.cpu.items())
            + f" = {step_cpu_ms:.2f} ms; {os.cpu_count()} cores at that cost: "
            f"{number(os.cpu_count() * 1000 / step_cpu_ms)} send steps/s at most",
        ),
        measured(
            "delivered to the fake provider",
            f"{number(advanced.sent / advanced.delivered_seconds)} messages/s "
            f"(all sent {advanced.delivered_seconds:.1f} s after the first tick)",
        ),
        measured(
            f"advance {count:,} due enrollments through a wait node (the engine alone)",
            f"{number(count / advanced.wait.seconds)} steps/s over {advanced.wait.seconds:.1f} s; "
            f"{wait_cpu_ms:.3f} ms worker CPU per step",
        ),
        measured(
            "raw PostgreSQL: the send journey's rows, set-based",
            f"{advanced.raw_seconds:.1f} s ({number(raw_advance_rate)} enrollments/s)",
        ),
        ratio("advancing vs raw PostgreSQL", send_rate, raw_advance_rate, "raw enrollments/s"),
        measured(
            "claims",
            f"{advanced.wait.claimed + advanced.send.claimed:,} in "
            f"{advanced.wait.ticks + advanced.send.ticks} ticks "
            f"({reclaimed:,} claimed again after a lease expired); "
            f"{tick_cpu_ms:.3f} ms tick CPU per enrollment",
        ),
        check(
            "every enrollment advanced once",
            advanced.completed == count
            and advanced.steps == 2 * count
            and advanced.messages == count,
            found=f"{advanced.completed:,} completed, {advanced.steps:,} steps, "
            f"{advanced.messages:,} messages",
            expected=f"{count:,}, {2 * count:,}, {count:,}",
        ),
        check(
            "every message sent, one provider call each",
            advanced.sent == count
            and advanced.fake["sendgrid"] == count
            and advanced.fake["duplicates"] == 0,
            found=f"{advanced.sent:,} sent, {advanced.fake['sendgrid']:,} requests, "
            f"{advanced.fake['duplicates']} duplicate(s)",
            expected=f"{count:,}, {count:,}, none",
        ),
    ]
    from django.conf import settings

    notes = [
        "The advancing runs share this machine's cores between the bench process (ticking "
        "and polling), the two workers' processes (advancing; delivering), the fake API, "
        "PostgreSQL and Redis; the raw figures are PostgreSQL alone. The workers' CPU "
        "figures are their own and do not depend on what else runs; PostgreSQL's is the "
        "whole server's, so it counts whatever else uses it meanwhile.",
        "Enrolling is set-based (one statement whatever the count); most of its time is "
        "PostgreSQL writing the rows, their seven indexes and their three foreign-key "
        "checks (at commit), as the raw row shows. Advancing is per enrollment in Python "
        "(each walks its graph) but set-based around it: chunks of "
        f"{settings.ENGINE_CHUNK_SIZE} per transaction, "
        "the chunk's rows read in a few queries, its sends in one `message_send_many` "
        "call, its steps and enrollments written in bulk.",
    ]
    return Result(rows=rows, notes=notes)
