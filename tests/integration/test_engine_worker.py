"""The journey engine end to end: an API event published to the broker, a
real Celery worker enrolling the customer, the engine tick claiming the
enrollment and fanning it out, the worker advancing it and delivering the
email through the real SendGrid SDK to the loopback fake provider."""

import pytest
from django.db import transaction
from django.utils import timezone

from apps.journeys.engine import engine_tick
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.services import journey_import
from apps.messaging.models import Channel, Message, Template
from tests.fakes.provider import SENDGRID_KEY, FakeProviderServer
from tests.integration.conftest import wait_for
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
