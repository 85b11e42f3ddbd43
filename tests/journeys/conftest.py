"""Shared journey fixtures (definitions and engine tests both use them).

`make_journey(definition, publish=True)` goes through the real import and
publish services, so a fixture journey is exactly what a marketer's file
would make. `journey_file(**overrides)` is a small valid journey file:
an event trigger, an email, a wait, a branch, an SMS, an exit.
"""

import copy
from datetime import UTC, datetime

import pytest

from apps.customers.models import Customer
from apps.messaging.models import Channel, Template
from apps.segments.models import Segment

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

BASE_FILE = {
    "slug": "onboarding",
    "name": "Onboarding",
    "trigger": {"type": "event", "event": "signed_up"},
    "reentry": {"policy": "never"},
    "goal": {"event": "activated", "op": "since_enrolled"},
    "exit_on_segment_exit": False,
    "holdout_percent": 0,
    "start": "welcome",
    "nodes": [
        {"id": "welcome", "type": "email", "template": "welcome", "next": "wait1"},
        {"id": "wait1", "type": "wait", "duration": {"days": 2}, "next": "check"},
        {
            "id": "check",
            "type": "branch",
            "condition": {"event": "activated", "op": "since_enrolled"},
            "yes": "done",
            "no": "nudge",
        },
        {"id": "nudge", "type": "sms", "template": "activation-nudge", "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


@pytest.fixture
def now() -> datetime:
    return T0


@pytest.fixture
def customer(db) -> Customer:
    return Customer.objects.create(
        external_id="u-1",
        email="ada@example.com",
        phone="+14155550101",
        timezone="Europe/London",
        traits={"email": "ada@example.com", "plan": "pro", "first_name": "Ada"},
    )


@pytest.fixture
def make_template(db):
    def make(slug: str, channel: str = Channel.EMAIL, **fields) -> Template:
        defaults = (
            {"subject": f"Hello {{{{ customer.first_name }}}} ({slug})", "html": "<p>Hi</p>"}
            if channel == Channel.EMAIL
            else {"body": f"Hi from {slug}"}
        )
        return Template.objects.create(
            slug=slug, name=fields.pop("name", slug), channel=channel, **{**defaults, **fields}
        )

    return make


@pytest.fixture
def template(make_template) -> Template:
    """The email template `welcome` and the SMS template `activation-nudge`
    (both used by `journey_file()`); returns the email one."""
    make_template("activation-nudge", Channel.SMS)
    return make_template("welcome", Channel.EMAIL)


@pytest.fixture
def segment(db) -> Segment:
    return Segment.objects.create(
        slug="trialing",
        name="Trialing",
        definition={"trait": "status", "op": "eq", "value": "trial"},
    )


@pytest.fixture
def journey_file():
    """journey_file(**top-level overrides) -> a fresh copy of the base file."""

    def make(**overrides) -> dict:
        return {**copy.deepcopy(BASE_FILE), **copy.deepcopy(overrides)}

    return make


@pytest.fixture
def make_journey(db, template, now):
    """make_journey(definition=None, publish=True, now=T0) -> Journey, through
    journey_import (and journey_publish). Needs the `template` fixture's
    templates, which it pulls in."""
    from apps.journeys.services import journey_import

    def make(definition: dict | None = None, publish: bool = True, *, at: datetime | None = None):
        data = copy.deepcopy(definition) if definition is not None else copy.deepcopy(BASE_FILE)
        return journey_import(data, now=at or now, publish=publish)

    return make


# --- engine and trigger fixtures ---------------------------------------------------------

# What the renderer requires of marketing email (RELIABILITY.md 18).
EMAIL_FOOTER_HTML = (
    '<p>{{ company.postal_address }} · <a href="{{ links.unsubscribe }}">Unsubscribe</a></p>'
)
EMAIL_FOOTER_TEXT = "{{ company.postal_address }}. Unsubscribe: {{ links.unsubscribe }}"


@pytest.fixture
def sendable(template):
    """The `template` fixture's email templates with the footer marketing email
    needs, so journeys built on them really send."""
    Template.objects.filter(channel=Channel.EMAIL).update(
        html="<p>Hi {{ customer.first_name }}</p>" + EMAIL_FOOTER_HTML,
        text="Hi {{ customer.first_name }}. " + EMAIL_FOOTER_TEXT,
    )
    template.refresh_from_db()
    return template


@pytest.fixture
def sms_consent(db):
    """sms_consent(customer, at=T0): record the customer's SMS opt-in."""
    from apps.messaging.consent import consent_record
    from apps.messaging.models import ConsentRecord

    def grant(customer: Customer, *, at: datetime = T0) -> None:
        consent_record(
            customer=customer,
            channel=Channel.SMS,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.ADMIN,
            recorded_at=at,
        )

    return grant


@pytest.fixture
def make_customers(db):
    """make_customers(n, prefix="c", **fields) -> [Customer]: in one insert."""

    def make(n: int, prefix: str = "c", *, traits: dict | None = None, **fields) -> list:
        fields.setdefault("timezone", "Europe/London")
        return Customer.objects.bulk_create(
            Customer(
                external_id=f"{prefix}-{i}",
                email=f"{prefix}{i}@example.com",
                traits={
                    "email": f"{prefix}{i}@example.com",
                    "first_name": f"Customer {i}",
                    **(traits or {}),
                },
                **fields,
            )
            for i in range(n)
        )

    return make


@pytest.fixture
def steps_of():
    """steps_of(enrollment) -> [(node_id, visit, outcome)] in order."""
    from apps.journeys.models import EnrollmentStep

    def steps(enrollment) -> list[tuple[str, int, str]]:
        rows = EnrollmentStep.objects.filter(enrollment=enrollment).order_by("started_at", "id")
        return list(rows.values_list("node_id", "visit", "outcome"))

    return steps


@pytest.fixture
def track(db):
    """track("u-1", "login", at=T0, plan="pro") -> the Event, through the real
    ingest path (as an import: no listener publishes anything)."""
    from apps.customers.models import Event
    from apps.customers.schemas import TrackIn
    from apps.customers.services import ingest

    def track(user_id: str, event: str, *, at: datetime, **properties):
        result = ingest(
            [TrackIn(userId=user_id, event=event, timestamp=at, properties=properties)],
            received_at=at,
            source="import",
        )
        return Event.objects.get(pk=result.event_ids[0])

    return track
