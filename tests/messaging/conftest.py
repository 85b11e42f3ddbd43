"""Messaging fixtures: messages written as rows, the loopback fake SendGrid +
Twilio server with the real SDKs pointed at it, and the in-memory outbox.

Other helpers may add their fixtures at the end of this file."""

import itertools
from datetime import UTC, datetime

import pytest

from apps.customers.models import Customer
from apps.messaging.models import Category, Channel, Message
from apps.messaging.providers import locmem
from tests.fakes.provider import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN, FakeProviderServer

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TWILIO_FROM = "+15005550006"

_serial = itertools.count(1)


@pytest.fixture
def make_message(make_customer):
    """make_message(channel="sms", status=..., **fields): a Message row as the
    send service leaves it (queued, rendered, never published)."""

    def make(
        *, channel: str = Channel.EMAIL, customer: Customer | None = None, **fields
    ) -> Message:
        customer = customer or make_customer()
        n = next(_serial)
        email = channel == Channel.EMAIL
        fields.setdefault("category", Category.MARKETING)
        fields.setdefault("to_address", customer.email if email else customer.phone)
        fields.setdefault("idempotency_key", f"test:{n}")
        fields.setdefault("created_at", T0)
        if email:
            fields.setdefault("subject", f"Hello number {n}")
            fields.setdefault("html", f"<p>Hello number {n}</p>")
            fields.setdefault("text", f"Hello number {n}")
        else:
            fields.setdefault("text", f"Hello number {n}. Reply STOP to opt out.")
        return Message.objects.create(customer=customer, channel=channel, **fields)

    return make


@pytest.fixture
def fake_provider(settings, monkeypatch):
    """The fake SendGrid + Twilio API on 127.0.0.1, with the providers set to
    the real SDKs pointed at it. No rate limit unless a test sets one."""
    # They rewrite Twilio hosts inside the SDK; a developer's shell must not
    # change where the tests' requests go.
    monkeypatch.delenv("TWILIO_EDGE", raising=False)
    monkeypatch.delenv("TWILIO_REGION", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeProviderServer() as server:
        settings.EMAIL_PROVIDER = "sendgrid"
        settings.SMS_PROVIDER = "twilio"
        settings.SENDGRID_API_KEY = SENDGRID_KEY
        settings.SENDGRID_API_HOST = server.url
        settings.TWILIO_ACCOUNT_SID = TWILIO_SID
        settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
        settings.TWILIO_FROM_NUMBER = TWILIO_FROM
        settings.TWILIO_MESSAGING_SERVICE_SID = ""
        settings.TWILIO_API_BASE_URL = server.url
        settings.SENDGRID_RATE_PER_SECOND = 0
        settings.TWILIO_RATE_PER_SECOND = 0
        settings.DELIVERY_TIMEOUT_S = 2.0
        settings.PUBLIC_BASE_URL = "https://tenure.example.com"
        yield server


@pytest.fixture
def outbox(settings):
    """The locmem providers for both channels; their outbox, emptied."""
    settings.EMAIL_PROVIDER = "locmem"
    settings.SMS_PROVIDER = "locmem"
    locmem.outbox.clear()
    yield locmem.outbox
    locmem.outbox.clear()


class Published(list):
    """Message id lists, one per delivery task published; `etas` holds any
    ETA or countdown a task carried (delivery never sets one: waits are rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.etas: list = []


@pytest.fixture
def published():
    """The delivery tasks published to the broker during the test, as lists of
    message ids (observed with Celery's own `before_task_publish` signal)."""
    from celery.signals import before_task_publish

    batches = Published()

    def record(sender=None, body=None, headers=None, **kwargs):
        if sender == "apps.messaging.tasks.deliver_messages":
            args = body[0] if isinstance(body, tuple | list) else body["args"]
            batches.append(list(args[0]))
            if (headers or {}).get("eta") or (headers or {}).get("countdown"):
                batches.etas.append(headers.get("eta") or headers.get("countdown"))

    before_task_publish.connect(record, weak=False)
    yield batches
    before_task_publish.disconnect(record)


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Rate-limit buckets start full: the Redis ones go with the cache
    (cleared for every test); the file ones are removed here."""
    import shutil

    shutil.rmtree(settings.DATA_DIR / "ratelimit", ignore_errors=True)
