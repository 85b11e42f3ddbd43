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
