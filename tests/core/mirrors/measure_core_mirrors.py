"""What the fast signer (apps/core/mirrors/django_signing.py) and the C
timestamp loader (apps/core/mirrors/psycopg_timestamps.py) save on their
paths: a measurement, not a test (its name keeps it out of the suite).

    .venv/bin/python -m pytest tests/core/mirrors/measure_core_mirrors.py -q -s -p no:randomly

With and without the mirror alternate round by round; each figure is the
best (minimum) and the median round, as wall time and as this process's CPU
time. The signer: tokens alone, then `message_send_many` writing 100 of the
messaging bench's emails (rolled back). The loader: the engine's chunk read,
`enrollments_advance` of 250 through a wait node and through a send node,
and `messages_deliver` of 100 (console provider)."""

import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core import signing
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import register_tzloader

from apps.core.mirrors import psycopg_timestamps as timestamps
from apps.customers.models import Customer
from apps.journeys.engine import enrollments_advance
from apps.journeys.models import Enrollment, Journey
from apps.journeys.services import journey_import
from apps.messaging import links as messaging_links
from apps.messaging.delivery import messages_deliver
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.services import SendRequest, message_send_many
from apps.tracking import tokens as tracking_tokens
from tests.journeys.conftest import BASE_FILE
from tests.messaging.sending import apply_send_settings

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
EMAIL_HTML = (  # bench/messaging.py's email: one tracked link, the footer's two
    "<html><body><p>Hi {{ customer.first_name | default('there') }},</p>"
    "<p>Your {{ customer.plan }} plan renews on {{ customer.renewal_day }}. "
    "You have used {{ customer.seats_used }} of {{ customer.seats }} seats this month."
    "</p><p><a href='https://app.example.com/billing'>Review your plan</a></p>"
    "<p style='color:#888'>{{ company.name }}, {{ company.postal_address }}. "
    "<a href='{{ links.unsubscribe }}'>Unsubscribe</a> · "
    "<a href='{{ links.preferences }}'>Preferences</a></p></body></html>"
)


def customers(n: int, prefix: str) -> list[Customer]:
    Customer.objects.bulk_create(
        [
            Customer(
                external_id=f"{prefix}-{i:06d}",
                email=f"reader{i}@example.com",
                timezone="Europe/Paris",
                last_seen_at=NOW - timedelta(days=i % 30),
                traits={"first_name": f"R{i}", "plan": "pro", "renewal_day": "2026-12-01",
                        "seats": 10, "seats_used": 3},
            )
            for i in range(n)
        ]
    )  # fmt: skip
    return list(Customer.objects.filter(external_id__startswith=prefix).order_by("pk"))


def compare(label: str, rounds: int, run, use, per: int, unit: str = "ms") -> None:
    scale = 1000 if unit == "ms" else 1_000_000
    """Alternate `use(True)`/`use(False)` and `run(n)`; print the best of each."""
    wall = {True: [], False: []}
    cpu = {True: [], False: []}
    for n in range(rounds):
        mirror = n % 2 == 0
        use(mirror)
        w, c = time.perf_counter(), time.process_time()
        run(n)
        wall[mirror].append(time.perf_counter() - w)
        cpu[mirror].append(time.process_time() - c)
    use(True)
    for kind, t in (("wall", wall), ("cpu", cpu)):
        for stat in (min, statistics.median):
            fast, slow = stat(t[True]) / per * scale, stat(t[False]) / per * scale
            print(
                f"{label} [{kind}, {stat.__name__}] {unit} per item: mirror {fast:.4f}, "
                f"upstream {slow:.4f}, saved {100 * (slow - fast) / slow:.1f}%"
            )


# --- the signer: messages written (message_send_many, rolled back) -----------------


def django_sign(value: str, *, salt: str) -> str:
    return signing.Signer(salt=salt).sign(value)


def django_sign_object(obj, *, salt: str, timestamped: bool = False) -> str:
    if timestamped:
        return signing.dumps(obj, salt=salt)
    return signing.Signer(salt=salt).sign_object(obj)


FAST = (tracking_tokens.sign, messaging_links.sign_object)


def use_signer(mirror: bool) -> None:
    tracking_tokens.sign = FAST[0] if mirror else django_sign
    messaging_links.sign_object = FAST[1] if mirror else django_sign_object


def test_signer(settings):
    apply_send_settings(settings)
    template = Template.objects.create(
        slug="renewal", name="Renewal", channel=Channel.EMAIL, category=Category.MARKETING,
        subject="Your {{ customer.plan }} plan", html=EMAIL_HTML,
    )  # fmt: skip
    people = customers(100, "sig")
    for label, fast, slow, arg in (
        ("sign", FAST[0], django_sign, "12345"),
        ("sign_object", FAST[1], django_sign_object, {"m": 12345}),
    ):
        fns = {True: fast, False: slow}
        holder = {"arg": arg}
        compare(
            f"token ({label})", 20,
            lambda n, h=holder: [h["f"](h["arg"], salt="s") for _ in range(5000)],
            lambda m, h=holder, fns=fns: h.update(f=fns[m]), 5000, "us",
        )  # fmt: skip

    def send(n):
        with transaction.atomic():
            message_send_many(
                [SendRequest(customer=c, template=template, idempotency_key=f"k{n}:{c.pk}")
                 for c in people],
                now=NOW,
            )  # fmt: skip
            transaction.set_rollback(True)

    compare("message_send_many, 100 emails", 200, send, use_signer, 100)


# --- the timestamp loader ------------------------------------------------------------


def use_loader(mirror: bool) -> None:
    connection.ensure_connection()
    if mirror:
        timestamps.register(None, connection)
    else:
        register_tzloader(connection.timezone, connection.connection)


WAIT_FILE = {
    "slug": "waiter", "name": "Waiter", "trigger": {"type": "event", "event": "signed_up"},
    "reentry": {"policy": "never"}, "start": "w",
    "nodes": [{"id": "w", "type": "wait", "duration": {"days": 1}, "next": "done"},
              {"id": "done", "type": "exit"}],
}  # fmt: skip


def enrolled(journey_file: dict, start: str, n: int) -> list[int]:
    journey = journey_import(journey_file, now=NOW, publish=True)
    journey = Journey.objects.get(pk=journey.pk)
    people = customers(n, journey.slug)
    Enrollment.objects.bulk_create(
        [
            Enrollment(
                journey=journey, journey_version=journey.live_version, customer=c,
                current_node=start, next_run_at=NOW, entered_at=NOW, context={},
            )
            for c in people
        ]
    )  # fmt: skip
    return list(
        Enrollment.objects.filter(journey=journey).order_by("pk").values_list("pk", flat=True)
    )


def test_timestamp_loader(settings):
    apply_send_settings(settings)
    Template.objects.create(
        slug="welcome", name="Welcome", channel=Channel.EMAIL, category=Category.MARKETING,
        subject="Welcome", html=EMAIL_HTML,
    )  # fmt: skip
    Template.objects.create(slug="activation-nudge", name="Nudge", channel=Channel.SMS, body="Hi")
    chunk = 250
    waits = enrolled(WAIT_FILE, "w", chunk * 16)
    sends = enrolled(BASE_FILE, "welcome", chunk * 16)

    def read(n):
        ids = waits[(n % 16) * chunk : (n % 16 + 1) * chunk]
        with transaction.atomic():
            rows = list(
                Enrollment.objects.filter(pk__in=ids, next_run_at__lte=NOW)
                .select_related("customer")
                .order_by("pk")
                .select_for_update(skip_locked=True, of=("self",))
            )
        assert len(rows) == chunk

    compare("engine's chunk read (enrollments + customers)", 40, read, use_loader, chunk)
    compare(
        "enrollments_advance through a wait node", 16,
        lambda n: enrollments_advance(waits[n * chunk : (n + 1) * chunk], now=NOW),
        use_loader, chunk,
    )  # fmt: skip
    compare(
        "enrollments_advance through a send node", 16,
        lambda n: enrollments_advance(sends[n * chunk : (n + 1) * chunk], now=NOW),
        use_loader, chunk,
    )  # fmt: skip

    sent = Message.objects.filter(journey="onboarding").order_by("pk")
    ids = list(sent.values_list("pk", flat=True))
    batches = [ids[i * 100 : (i + 1) * 100] for i in range(20)]
    compare(
        "messages_deliver (console provider)", 20,
        lambda n: messages_deliver(batches[n], now=NOW + timedelta(seconds=1)), use_loader, 100,
    )  # fmt: skip
