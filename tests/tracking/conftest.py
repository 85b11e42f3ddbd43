"""Tracking fixtures: customers and sent messages as rows, a SendGrid webhook
key pair made here (the private half signs like SendGrid does), Twilio
signatures computed with the SDK's own validator, and the processor."""

import base64
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory
from twilio.request_validator import RequestValidator

from apps.customers.models import Customer, Event
from apps.messaging.models import Category, Channel, Message, Template
from apps.tracking.services.processing import tracking_process

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PUBLIC = "https://tenure.example.com"
TWILIO_TOKEN = "test-twilio-auth-token"

_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def tracking_settings(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.TRACKING_MACHINE_CLICK_SECONDS = 10
    settings.SMS_HELP_TEXT = "Tenure Demo: reply STOP to opt out. Help: help@example.com"
    return settings


@pytest.fixture
def template(db):
    return Template.objects.create(
        slug="welcome", name="Welcome", channel=Channel.EMAIL, subject="Hi", html="<p>Hi</p>"
    )


@pytest.fixture
def make_message(make_customer, template):
    """make_message(channel="sms", status="sent", ...): a message as delivery
    leaves it once the provider took it (sent at T0, with the provider's id)."""

    def make(*, channel: str = Channel.EMAIL, customer: Customer | None = None, **fields):
        customer = customer or make_customer()
        n = next(_serial)
        email = channel == Channel.EMAIL
        fields.setdefault("category", Category.MARKETING)
        fields.setdefault("to_address", customer.email if email else customer.phone)
        fields.setdefault("idempotency_key", f"test:{n}")
        fields.setdefault("created_at", T0 - timedelta(minutes=1))
        fields.setdefault("status", Message.Status.SENT)
        fields.setdefault("sent_at", T0)
        fields.setdefault("journey", "onboarding")
        fields.setdefault("node_id", "welcome")
        if email:
            fields.setdefault("template", template)
            fields.setdefault("provider", "sendgrid")
            fields.setdefault("provider_message_id", f"sgid{n:06d}")
            fields.setdefault("html", f'<p>Hello <a href="https://example.com/{n}">go</a></p>')
        else:
            fields.setdefault("provider", "twilio")
            fields.setdefault("provider_message_id", f"SM{n:032d}")
            fields.setdefault("text", "Hello. Reply STOP to opt out.")
        return Message.objects.create(customer=customer, channel=channel, **fields)

    return make


@pytest.fixture
def process():
    """Run the processor as beat would, at `now` (default: T0 + 1 hour)."""

    def run(now: datetime | None = None):
        return tracking_process(now=now or T0 + timedelta(hours=1))

    return run


# --- the WSGI application as gunicorn calls it --------------------------------


class WsgiResponse:
    """What a WSGI application answered, read like a test client's response."""

    def __init__(self, status: str, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = int(status.split(" ", 1)[0])
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.content = content

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.headers


def wsgi_call(application, method: str, path: str, **environ) -> WsgiResponse:
    """Call `application` (config.wsgi's, by default) with the environ a WSGI
    server would pass for `method path` (plus `environ`: HTTP_* headers...)."""
    if application is None:
        from config.wsgi import application
    request_environ = RequestFactory().generic(method.upper(), path, **environ).environ
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered.update(status=status, headers=headers)

    # As Django's test client does: the request signals must not close the
    # test's connection (its transaction holds the test's rows).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        body = application(request_environ, start_response)
        try:
            content = b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return WsgiResponse(answered["status"], answered["headers"], content)


def events_named(name: str) -> list[Event]:
    return list(Event.objects.filter(name=name).order_by("id"))


# --- SendGrid -----------------------------------------------------------------


class SendGridSigner:
    """Signs bodies the way SendGrid does (ECDSA P-256 over timestamp + body)
    with a key pair made for the test; `public_key` is what SendGrid's
    settings page shows (base64 DER), for SENDGRID_WEBHOOK_PUBLIC_KEY."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, *, timestamp: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        signature = self.private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": base64.b64encode(signature).decode(),
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp,
        }


@pytest.fixture
def sendgrid_signer(settings) -> SendGridSigner:
    signer = SendGridSigner()
    settings.SENDGRID_WEBHOOK_PUBLIC_KEY = signer.public_key
    return signer


_sg_serial = itertools.count(1)


def sg_event(event: str, message: Message | None = None, **fields) -> dict:
    """A SendGrid event as the webhook posts it, for `message` (our custom
    arg and its X-Message-Id with SendGrid's suffix), at T0 + 1 minute."""
    n = next(_sg_serial)
    item = {
        "event": event,
        "email": message.to_address if message else f"stranger{n}@example.com",
        "timestamp": int((T0 + timedelta(minutes=1)).timestamp()),
        "sg_event_id": f"sg-event-{n}",
        "sg_message_id": (
            f"{message.provider_message_id}.filterdrecv-1-2-3" if message else f"unknown{n}.f"
        ),
    }
    if message is not None:
        item["tenure_message_id"] = str(message.pk)
    item.update(fields)
    return item


@pytest.fixture
def post_sendgrid(db, client, sendgrid_signer):
    """post_sendgrid([events...]) or post_sendgrid(raw=b"...") with a valid signature."""

    def post(events=None, *, raw: bytes | None = None, headers: dict | None = None):
        body = raw if raw is not None else json.dumps(events).encode()
        signed = sendgrid_signer.headers(body) if headers is None else headers
        return client.post(
            "/webhooks/sendgrid", data=body, content_type="application/json", **signed
        )

    return post


# --- Twilio -------------------------------------------------------------------


def twilio_signature(url: str, params: dict, token: str = TWILIO_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


@pytest.fixture
def post_twilio(db, client):
    """post_twilio("status", {...}): a form POST signed for the public URL."""

    def post(kind: str, params: dict, *, signature: str | None = None, **extra):
        path = f"/webhooks/twilio/{kind}"
        if signature is None:
            signature = twilio_signature(PUBLIC + path, params)
        return client.post(
            path,
            data=urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=signature,
            **extra,
        )

    return post


def status_params(message: Message, status: str, **extra) -> dict:
    return {
        "MessageSid": message.provider_message_id,
        "MessageStatus": status,
        "To": message.to_address,
        "From": "+15005550006",
        "AccountSid": "AC" + "0" * 32,
        **extra,
    }


_in_serial = itertools.count(1)


def inbound_params(number: str, body: str, **extra) -> dict:
    return {
        "MessageSid": f"SMin{next(_in_serial):030d}",
        "From": number,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        **extra,
    }
