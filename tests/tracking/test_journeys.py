"""Engagement feeding journeys end to end: a journey sends an email, its
open comes back through the pixel and the processor as `email_opened`, and
the journey's `wait_for_event` and goal react to a person's engagement and
never to a machine's."""

from datetime import timedelta

import pytest

from apps.customers.models import Customer, Event
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.services import journey_import
from apps.journeys.triggers import events_received
from apps.messaging.models import Channel, Message, Template
from apps.tracking.services.hits import click_record, open_record
from apps.tracking.services.processing import tracking_process

from .conftest import T0

BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
FOOTER_HTML = (
    '<p>{{ company.postal_address }} <a href="{{ links.unsubscribe }}">Unsubscribe</a></p>'
)
FOOTER_TEXT = "{{ company.postal_address }}. Unsubscribe: {{ links.unsubscribe }}"


@pytest.fixture
def journey(db):
    Template.objects.create(
        slug="hello",
        name="Hello",
        channel=Channel.EMAIL,
        subject="Hello",
        html='<html><body><p>See <a href="https://example.com/start">how to start</a></p>'
        + FOOTER_HTML
        + "</body></html>",
        text="See https://example.com/start. " + FOOTER_TEXT,
    )
    return journey_import(
        {
            "slug": "hello",
            "name": "Hello",
            "trigger": {"type": "event", "event": "signed_up"},
            "reentry": {"policy": "never"},
            "goal": {"event": "email_clicked", "op": "since_enrolled"},
            "exit_on_segment_exit": False,
            "holdout_percent": 0,
            "start": "send",
            "nodes": [
                {"id": "send", "type": "email", "template": "hello", "next": "await"},
                {
                    "id": "await",
                    "type": "wait_for_event",
                    "event": "email_opened",
                    "timeout": {"days": 3},
                    "yes": "engaged",
                    "no": "quiet",
                },
                {"id": "engaged", "type": "exit"},
                {"id": "quiet", "type": "exit"},
            ],
        },
        now=T0,
        publish=True,
    )


def start(journey, external_id: str) -> tuple[Enrollment, Message]:
    customer = Customer.objects.create(
        external_id=external_id, email=f"{external_id}@example.com", timezone="UTC"
    )
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=T0)
    enrollments_advance([enrollment.pk], now=T0)
    message = Message.objects.get(customer=customer)
    assert message.status == Message.Status.QUEUED, message.reason or message.error
    # What delivery records once SendGrid took it.
    Message.objects.filter(pk=message.pk).update(status=Message.Status.SENT, sent_at=T0)
    return enrollment, message


def outcome(enrollment: Enrollment, node_id: str) -> str:
    return EnrollmentStep.objects.get(enrollment=enrollment, node_id=node_id).outcome


def live_events_reach_journeys(now) -> None:
    """What the journeys' ingest listener's task does with live events."""
    events_received(event_ids=list(Event.objects.values_list("id", flat=True)), now=now)


def test_a_person_opening_ends_the_wait_and_a_scanner_opening_does_not(journey):
    person, to_person = start(journey, "person")
    scanned, to_scanned = start(journey, "scanned")
    at = T0 + timedelta(hours=1)
    open_record(message_id=to_person.pk, now=at, method="GET", user_agent=BROWSER)
    open_record(message_id=to_scanned.pk, now=at, method="HEAD", user_agent=BROWSER)

    tracking_process(now=at + timedelta(seconds=5))
    live_events_reach_journeys(at + timedelta(seconds=5))
    enrollments_advance([person.pk, scanned.pk], now=at + timedelta(seconds=5))
    enrollments_advance([person.pk, scanned.pk], now=T0 + timedelta(days=3))

    assert outcome(person, "await") == "yes"
    assert outcome(scanned, "await") == "no"


def test_a_person_clicking_meets_the_goal_and_a_scanner_clicking_does_not(journey):
    person, to_person = start(journey, "clicker")
    scanned, to_scanned = start(journey, "scanner")
    late = T0 + timedelta(hours=2)
    # The scanner follows the link two seconds after the send.
    for message, at in ((to_scanned, T0 + timedelta(seconds=2)), (to_person, late)):
        url = click_record(
            message_id=message.pk, position=0, now=at, method="GET", user_agent=BROWSER
        )
        assert url == "https://example.com/start"

    tracking_process(now=late + timedelta(seconds=5))
    live_events_reach_journeys(late + timedelta(seconds=5))

    person.refresh_from_db()
    scanned.refresh_from_db()
    assert person.state == Enrollment.State.CONVERTED
    assert scanned.state == Enrollment.State.ACTIVE
