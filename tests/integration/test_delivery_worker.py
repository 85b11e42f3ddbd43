"""Delivery end to end: `message_send` in a committed transaction, a real
Celery worker process consuming the delivery queue, the real SDKs calling the
loopback fake SendGrid + Twilio API."""

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from apps.messaging.delivery import LEASE_EXPIRED, messages_sweep
from apps.messaging.models import Channel, Message
from apps.messaging.services import message_send
from tests.fakes.provider import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, FakeProviderServer, Reply
from tests.integration.conftest import wait_for
from tests.messaging.sending import grant, make_customer, make_template

S = Message.Status


@pytest.fixture
def fake_api(transactional_db, monkeypatch, settings):
    """The fake API, and the settings that point the SDKs at it, both in this
    process and in the environment the worker process inherits."""
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    with FakeProviderServer() as server:
        values = {
            "EMAIL_PROVIDER": "sendgrid",
            "SMS_PROVIDER": "twilio",
            "SENDGRID_API_KEY": SENDGRID_KEY,
            "SENDGRID_API_HOST": server.url,
            "TWILIO_ACCOUNT_SID": TWILIO_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": server.url,
            "PUBLIC_BASE_URL": "https://tenure.example.com",
            "SEND_HOURS_SMS": "",  # whatever the hour in the customers' zones
            "SENDGRID_RATE_PER_SECOND": "0",
            "TWILIO_RATE_PER_SECOND": "0",
            "DELIVERY_BACKOFF_BASE_S": "0.2",
            "DELIVERY_TIMEOUT_S": "2",
            # Short, so a test can wait for a lost worker's lease to run out.
            "DELIVERY_LEASE_S": "5",
            "DELIVERY_CONCURRENCY": "3",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
            setattr(settings, name, type(getattr(settings, name))(value))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield server


@pytest.fixture
def worker(fake_api, celery_worker_process):
    """The worker, started once the environment points at the fake (fixtures
    are set up in the order they are named)."""
    return celery_worker_process


def statuses(ids) -> list[str]:
    return list(Message.objects.filter(pk__in=ids).order_by("pk").values_list("status", flat=True))


def test_a_real_worker_delivers_committed_sends_through_the_fake_provider(fake_api, worker):
    email, sms = make_template(), make_template(channel=Channel.SMS)
    now = timezone.now()
    customers = [
        make_customer(email=f"reader{i}@example.com", phone=f"+1415555010{i}") for i in range(3)
    ]
    for customer in customers:
        grant(customer, Channel.SMS, at=now)

    with transaction.atomic():
        ids = [
            message_send(customer=c, template=t, idempotency_key=f"it:{t.slug}:{c.pk}", now=now).pk
            for c in customers
            for t in (email, sms)
        ]

    wait_for(lambda: statuses(ids) == [S.SENT] * 6, timeout=60)
    sent = Message.objects.filter(pk__in=ids)
    assert {m.provider for m in sent} == {"sendgrid", "twilio"}
    assert all(m.provider_message_id and m.attempts == 1 for m in sent)
    assert len(fake_api.sendgrid) == len(fake_api.twilio) == 3
    assert fake_api.stats()["duplicates"] == 0
    headers = fake_api.sendgrid[0].json["headers"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "apps.messaging.tasks.deliver_messages" in worker.log_path.read_text()


def test_a_provider_outage_is_retried_by_the_worker_and_the_message_goes_once(fake_api, worker):
    fake_api.script(
        "sendgrid",
        Reply.sendgrid_error(503, "service unavailable"),
        Reply.sendgrid_error(500, "internal error"),
    )
    template, customer = make_template(), make_customer(email="patient@example.com")

    with transaction.atomic():
        message = message_send(
            customer=customer, template=template, idempotency_key="it:outage", now=timezone.now()
        )

    def delivered():
        # What beat would do every few seconds: publish the retry once it is due.
        messages_sweep(now=timezone.now())
        return statuses([message.pk]) == [S.SENT]

    wait_for(delivered, timeout=60, interval=0.3)
    message.refresh_from_db()
    assert message.attempts == 3
    assert [r.status for r in fake_api.sendgrid] == [503, 500, 202]
    assert fake_api.stats()["unique_message_ids"] == 1


def pool_processes(worker) -> list[int]:
    """The prefork pool's child processes (the ones that run tasks)."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_worker_killed_mid_batch_sends_nothing_twice_and_loses_nothing(
    fake_api, worker, settings
):
    settings.DELIVERY_REPUBLISH_AFTER_S = 2
    in_flight = 3  # the worker's DELIVERY_CONCURRENCY (see the worker fixture)
    fake_api.delay = 0.3  # a slow provider: the kill lands mid-batch
    template = make_template()
    customers = [make_customer(email=f"batch{i}@example.com") for i in range(10)]
    with transaction.atomic():
        ids = [
            message_send(
                customer=c, template=template, idempotency_key=f"it:kill:{c.pk}", now=timezone.now()
            ).pk
            for c in customers
        ]  # one task: DELIVERY_BATCH_SIZE is 100

    wait_for(lambda: len(fake_api.sendgrid) >= 3, timeout=60, interval=0.02)
    for pid in pool_processes(worker):
        os.kill(pid, signal.SIGKILL)  # the process running the batch, mid-call

    def settled():
        # Beat's sweeper: the lost claim's lease runs out, the rest is published again.
        messages_sweep(now=timezone.now())
        return not Message.objects.filter(pk__in=ids, status__in=[S.QUEUED, S.SENDING]).exists()

    wait_for(settled, timeout=90, interval=0.5)
    final = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    unknown = [pk for pk, status in final.items() if status == S.UNKNOWN]
    assert set(final.values()) <= {S.SENT, S.UNKNOWN}
    # Those whose calls were in flight (one group): maybe sent, never re-sent.
    assert 1 <= len(unknown) <= in_flight
    for message in Message.objects.filter(pk__in=unknown):
        assert message.error == LEASE_EXPIRED
    stats = fake_api.stats()
    assert stats["duplicates"] == 0  # no message reached the provider twice
    assert stats["unique_message_ids"] == len(fake_api.sendgrid)
    # Each sent message reached the provider once; an unknown one at most once.
    assert 0 <= len(fake_api.sendgrid) - list(final.values()).count(S.SENT) <= len(unknown)


def test_a_worker_delivering_to_a_provider_slower_than_the_timeout_sends_each_message_once(
    fake_api, worker
):
    # Every answer comes after the worker's DELIVERY_TIMEOUT_S (2 s): each
    # request reached the provider, none was answered in time.
    fake_api.delay = 3.0
    email, sms = make_template(), make_template(channel=Channel.SMS)
    now = timezone.now()
    customers = [
        make_customer(email=f"slow{i}@example.com", phone=f"+1415555020{i}") for i in range(3)
    ]
    for customer in customers:
        grant(customer, Channel.SMS, at=now)
    with transaction.atomic():
        ids = [
            message_send(
                customer=c, template=t, idempotency_key=f"it:slow:{t.slug}:{c.pk}", now=now
            ).pk
            for c in customers
            for t in (email, sms)
        ]

    wait_for(lambda: statuses(ids) == [S.UNKNOWN] * 6, timeout=60, interval=0.3)
    # Beat's sweeper, well past any backoff: nothing is waiting to go again.
    assert messages_sweep(now=timezone.now() + timedelta(hours=1)).published == 0

    unknown = Message.objects.filter(pk__in=ids)
    assert all(m.attempts == 1 and "may have reached" in m.error for m in unknown)
    assert len(fake_api.sendgrid) == len(fake_api.twilio) == 3  # one request per message
    assert fake_api.stats()["duplicates"] == 0
