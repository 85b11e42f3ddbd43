"""Builders shared by the rendering, policy, consent and send tests: templates
that pass `template_check`, customers written through the real ingest path,
and consent written through the real ledger service."""

import itertools
from datetime import UTC, datetime

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn
from apps.customers.services import ingest
from apps.messaging.consent import consent_record
from apps.messaging.models import Category, Channel, ConsentRecord, Template

_serial = itertools.count(1)

# The policies the send and policy tests start from (a test changes one
# setting where it is about that setting).
SEND_SETTINGS = {
    "PUBLIC_BASE_URL": "https://tenure.example.com",
    "DEFAULT_FROM_EMAIL": "Acme <hello@acme.example>",
    "TWILIO_FROM_NUMBER": "+15005550006",
    "COMPANY_POSTAL_ADDRESS": "1 Demo Street, Springfield",
    "FREQUENCY_CAP_EMAIL": "3/7d",
    "FREQUENCY_CAP_SMS": "1/1d",
    "SEND_HOURS_EMAIL": "",
    "SEND_HOURS_SMS": "08:00-21:00",
    "EMAIL_MARKETING_REQUIRES_OPT_IN": False,
}


def apply_send_settings(settings, **overrides) -> None:
    """SEND_SETTINGS (with `overrides`) on pytest-django's `settings`."""
    for name, value in (SEND_SETTINGS | overrides).items():
        setattr(settings, name, value)


FOOTER_HTML = (
    '<p style="color:#888">{{ company.name }}, {{ company.postal_address }}. '
    '<a href="{{ links.unsubscribe }}">Unsubscribe</a> · '
    '<a href="{{ links.preferences }}">Preferences</a></p>'
)


def make_template(**fields) -> Template:
    """A stored template; marketing email by default, with the compliance footer."""
    n = next(_serial)
    fields.setdefault("slug", f"template-{n}")
    fields.setdefault("name", f"Template {n}")
    fields.setdefault("channel", Channel.EMAIL)
    fields.setdefault("category", Category.MARKETING)
    if fields["channel"] == Channel.EMAIL:
        fields.setdefault("subject", "Hello {{ customer.first_name | default('there') }}")
        fields.setdefault(
            "html",
            "<html><body><p>Hi {{ customer.first_name | default('there') }},</p>"
            f"{FOOTER_HTML}</body></html>",
        )
    else:
        fields.setdefault(
            "body", "Hi {{ customer.first_name | default('there') }}! Reply STOP to stop."
        )
    return Template.objects.create(**fields)


def make_customer(
    external_id: str | None = None, *, at: datetime | None = None, **traits
) -> Customer:
    """A customer created by an identify call (the one write path)."""
    external_id = external_id or f"h3-cust-{next(_serial)}"
    at = at or datetime(2026, 1, 1, tzinfo=UTC)
    ingest([IdentifyIn(userId=external_id, traits=traits, timestamp=at)], received_at=at)
    return Customer.objects.get(external_id=external_id)


def grant(
    customer: Customer,
    channel: str = Channel.SMS,
    *,
    at: datetime,
    topic: str = "",
    source=ConsentRecord.Source.API,
):
    return consent_record(
        customer=customer,
        channel=channel,
        status=ConsentRecord.Status.GRANTED,
        source=source,
        recorded_at=at,
        topic=topic,
    )


def revoke(
    customer: Customer,
    channel: str = Channel.SMS,
    *,
    at: datetime,
    topic: str = "",
    source=ConsentRecord.Source.API,
):
    return consent_record(
        customer=customer,
        channel=channel,
        status=ConsentRecord.Status.REVOKED,
        source=source,
        recorded_at=at,
        topic=topic,
    )
