"""The journey engine end to end: an API event published to the broker, a
real Celery worker enrolling the customer, the engine tick claiming the
enrollment and fanning it out, the worker advancing it and delivering the
email through the real SendGrid SDK to the loopback fake provider."""

import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.journeys.engine import engine_tick
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Message, Template
from config.celery import QUEUES
from tests.fakes.provider import SENDGRID_KEY, FakeProviderServer
from tests.integration import conftest as integration
from tests.integration.conftest import ROOT, wait_for
from tests.journeys.conftest import EMAIL_FOOTER_HTML, EMAIL_FOOTER_TEXT

JOURNEY = {
    "slug": "welcome",
    "name": "Welcome",
    "trigger": {"type": "event", "event": "signed_up", "where": {"plan": "pro"}},
    "start": "hello",
    "nodes": [
        {"id": "hello", "type": "email", "template": "hello", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


@pytest.fixture
def provider(transactional_db, monkeypatch, settings):
    """The fake SendGrid, pointed at from this process and from the worker's
    environment."""
    with FakeProviderServer() as server:
        values = {
            "EMAIL_PROVIDER": "sendgrid",
            "SENDGRID_API_KEY": SENDGRID_KEY,
            "SENDGRID_API_HOST": server.url,
            "PUBLIC_BASE_URL": "https://tenure.example.com",
            "SENDGRID_RATE_PER_SECOND": "0",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
            setattr(settings, name, type(getattr(settings, name))(value))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield server


@pytest.fixture
def worker(provider, celery_worker_process):
    """The worker, started once the environment points at the fake."""
    return celery_worker_process


@pytest.fixture
def journey(transactional_db):
    Template.objects.create(
        slug="hello",
        name="Hello",
        channel=Channel.EMAIL,
        subject="Welcome, {{ customer.first_name | default('friend') }}",
        html=f"<p>Welcome aboard.</p>{EMAIL_FOOTER_HTML}",
        text=f"Welcome aboard. {EMAIL_FOOTER_TEXT}",
    )
    return journey_import(JOURNEY, now=timezone.now(), publish=True)


def test_an_api_event_enrolls_and_the_tick_sends_through_a_real_worker(
    journey, provider, worker, api
):
    response = api(
        "identify", {"userId": "u-42", "traits": {"email": "grace@example.com", "plan": "pro"}}
    )
    assert response.status_code == 200
    response = api("track", {"userId": "u-42", "event": "signed_up", "properties": {"plan": "pro"}})
    assert response.status_code == 200

    enrollment = wait_for(lambda: Enrollment.objects.filter(journey=journey).first())
    assert enrollment.context["event"]["properties"] == {"plan": "pro"}
    with transaction.atomic():
        tick = engine_tick(now=timezone.now())  # publishes when this commits
    assert tick.claimed == 1

    wait_for(lambda: Enrollment.objects.get(pk=enrollment.pk).state == "completed")
    message = wait_for(lambda: Message.objects.filter(status=Message.Status.SENT).first())
    (request,) = provider.sendgrid
    assert request.json["personalizations"][0]["to"][0]["email"] == "grace@example.com"
    assert message.idempotency_key == f"enr:{enrollment.pk}:hello:1"
    assert list(
        EnrollmentStep.objects.filter(enrollment=enrollment)
        .order_by("started_at", "id")
        .values_list("node_id", "outcome")
    ) == [("hello", "sent"), ("done", "completed")]
    assert engine_tick(now=timezone.now()).claimed == 0
    assert "apps.journeys.tasks.advance_enrollments" in worker.log_path.read_text()


def _descendants(pid: int) -> list[int]:
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += [int(child), *_descendants(int(child))]
    return found


def waiting_on_a_lock() -> int:
    """Backends of the test database waiting for a row lock (a fresh look:
    pg_stat_activity is a snapshot per transaction)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _start_worker(log_path: Path) -> subprocess.Popen:
    """Another worker like `celery_worker_process`, for after the first one is killed."""
    env = {**os.environ, "DATABASE_URL": integration.test_database_url()}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", ",".join(QUEUES), "--concurrency", "1", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_for(lambda: b"ready." in log_path.read_bytes(), timeout=60)
    return proc


def test_a_worker_killed_mid_chunk_loses_no_enrollment_and_sends_nothing_twice(
    journey, provider, worker, tmp_path, settings
):
    """The worker is killed (-9) while its chunk's transaction is open: the
    message it wrote is rolled back with it, the claim expires, and the next
    worker sends it once."""
    from apps.customers.models import Customer
    from apps.journeys.enrollment import enrollments_start

    slow = {
        **JOURNEY,
        "slug": "slow",
        "trigger": {"type": "event", "event": "never"},
        "nodes": [
            {"id": "hello", "type": "email", "template": "hello", "next": "mark"},
            {"id": "mark", "type": "update_traits", "traits": {"welcomed": True}, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    }
    target = journey_import(slow, now=timezone.now(), publish=True)
    customer = Customer.objects.create(external_id="u-7", email="ada@example.com")
    enrollments_start(journey=target, customer_ids=[customer.pk], now=timezone.now())
    # Hold the customer's row: the worker sends, then waits on it at `mark`.
    holder = psycopg.connect(
        integration.test_database_url().replace("postgres://", "postgresql://")
    )
    holder.execute("SELECT 1 FROM customers_customer WHERE id = %s FOR UPDATE", [customer.pk])
    try:
        with transaction.atomic():
            engine_tick(now=timezone.now())
        wait_for(
            lambda: "advance_enrollments" in worker.log_path.read_text() and waiting_on_a_lock()
        )
        for pid in [*_descendants(worker.pid), worker.pid]:
            os.kill(pid, signal.SIGKILL)
        worker.wait(timeout=20)
        # Killed with its chunk unfinished and its transaction open.
        assert "advance_enrollments" not in "".join(
            line for line in worker.log_path.read_text().splitlines() if "succeeded" in line
        )
        assert not Message.objects.exists()
    finally:
        holder.rollback()
        holder.close()

    second = _start_worker(tmp_path / "second.log")
    try:
        lease = timedelta(seconds=settings.ENGINE_LEASE_S)
        enrollment = Enrollment.objects.get(journey=target)

        def done():
            with transaction.atomic():
                engine_tick(now=timezone.now() + lease)  # the killed claim has expired
            enrollment.refresh_from_db()
            return enrollment.state == "completed"

        wait_for(done, timeout=60, interval=1)
        wait_for(lambda: Message.objects.filter(status=Message.Status.SENT).exists())
    finally:
        second.terminate()
        second.wait(timeout=30)

    assert Message.objects.filter(enrollment_id=enrollment.pk).count() == 1
    assert len(provider.sendgrid) == 1
    assert list(
        EnrollmentStep.objects.filter(enrollment=enrollment)
        .order_by("started_at", "id")
        .values_list("node_id", "outcome")
    ) == [("hello", "sent"), ("mark", "updated"), ("done", "completed")]
    customer.refresh_from_db()
    assert customer.traits["welcomed"] is True
