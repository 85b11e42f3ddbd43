from datetime import UTC, datetime

import pytest

from apps.customers.models import Customer, Event, EventStat
from apps.journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from apps.messaging.models import Message, Template
from apps.tracking.models import Engagement

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def customer(db):
    counter = iter(range(1, 10_000))

    def make(**fields) -> Customer:
        n = next(counter)
        fields.setdefault("external_id", f"u{n}")
        fields.setdefault("email", f"u{n}@example.com")
        return Customer.objects.create(**fields)

    return make


@pytest.fixture
def journey(db):
    def make(slug="welcome", nodes=("welcome", "wait1", "done")) -> Journey:
        definition = {"slug": slug, "nodes": [{"id": n, "type": "email"} for n in nodes]}
        j = Journey.objects.create(slug=slug, name=slug.title(), status=Journey.Status.LIVE)
        v = JourneyVersion.objects.create(
            journey=j, number=1, definition=definition, published_at=NOW
        )
        j.live_version = v
        j.save(update_fields=["live_version"])
        return j

    return make


@pytest.fixture
def enroll(db):
    def make(journey, customer, *, at, nodes=(), state="active", holdout=False, finished_at=None):
        e = Enrollment.objects.create(
            journey=journey,
            journey_version=journey.live_version,
            customer=customer,
            state=state,
            entered_at=at,
            finished_at=finished_at,
            is_holdout=holdout,
        )
        for node in nodes:
            EnrollmentStep.objects.create(enrollment=e, node_id=node, started_at=at, outcome="ok")
        return e

    return make


@pytest.fixture
def template(db):
    def make(slug="news", channel="email") -> Template:
        return Template.objects.create(slug=slug, name=slug, channel=channel, category="marketing")

    return make


@pytest.fixture
def message(db):
    counter = iter(range(1, 100_000))

    def make(customer, *, at, status="sent", template=None, channel="email", journey="", **f):
        n = next(counter)
        return Message.objects.create(
            customer=customer,
            channel=channel,
            category="marketing",
            template=template,
            journey=journey,
            idempotency_key=f"k{n}",
            to_address=customer.email,
            status=status,
            created_at=at,
            sent_at=at if status not in ("queued", "suppressed", "failed") else None,
            **f,
        )

    return make


@pytest.fixture
def engage(db):
    def make(message, kind, *, at, machine=False):
        return Engagement.objects.create(
            message=message, kind=kind, source="pixel", occurred_at=at, created_at=at,
            machine=machine, processed_at=at,
        )  # fmt: skip

    return make


@pytest.fixture
def event(db):
    """An event and its EventStat, as ingest would write them."""

    def make(customer, name, *, at, **properties):
        Event.objects.create(
            customer=customer, name=name, properties=properties, occurred_at=at, received_at=at
        )
        stat, created = EventStat.objects.get_or_create(
            customer=customer, name=name, defaults={"count": 1, "first_at": at, "last_at": at}
        )
        if not created:
            stat.count += 1
            stat.first_at, stat.last_at = min(stat.first_at, at), max(stat.last_at, at)
            stat.save()

    return make
