"""Survey fixtures: the demo's survey and its templates loaded the way
`make run` loads them, customers, invitations made by the real invite
service, and the pieces of an answer (the score links, a signed Twilio
inbound text)."""

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from twilio.request_validator import RequestValidator

from apps.customers.models import Customer, Event
from apps.messaging.consent import consent_record
from apps.messaging.models import Channel, ConsentRecord
from apps.surveys.models import Survey
from apps.surveys.services import survey_invite

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "fixtures" / "templates.json"
SURVEYS = ROOT / "fixtures" / "surveys.json"
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
PUBLIC = "https://tenure.example.com"
TWILIO_TOKEN = "test-twilio-auth-token"

_serial = itertools.count(1)


def quietly(*args: str) -> None:
    from io import StringIO

    call_command(*args, stdout=StringIO(), stderr=StringIO())


@pytest.fixture(autouse=True)
def survey_settings(settings):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    settings.NPS_RESURVEY_AFTER_DAYS = 90
    settings.NPS_LINK_VALID_DAYS = 30
    settings.NPS_SMS_REPLY_HOURS = 72
    settings.SEND_HOURS_SMS = ""  # SMS surveys go out at once, whatever the test's hour
    settings.FREQUENCY_CAP_EMAIL = ""
    settings.FREQUENCY_CAP_SMS = ""
    return settings


@pytest.fixture
def survey(db) -> Survey:
    """The demo's NPS survey with its email and SMS templates, from the fixture files."""
    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    return Survey.objects.select_related("email_template", "sms_template").get(slug="nps")


@pytest.fixture
def make_customer(make_customer):
    """The suite's make_customer, with a first name (the survey copy uses it)."""

    def make(**fields) -> Customer:
        fields.setdefault("traits", {"first_name": "Person"})
        return make_customer(**fields)

    return make


@pytest.fixture
def customer(make_customer) -> Customer:
    return make_customer(external_id="ada", traits={"first_name": "Ada"})


@pytest.fixture
def sms_consent(db):
    def grant(customer: Customer, *, at: datetime = T0 - timedelta(days=30)) -> None:
        consent_record(
            customer=customer,
            channel=Channel.SMS,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.ADMIN,
            recorded_at=at,
        )

    return grant


@pytest.fixture
def invite(survey):
    """invite(customer, channel="email", at=T0) -> the invitation, through survey_invite."""

    def make(customer: Customer, channel: str = Channel.EMAIL, *, at: datetime = T0, **extra):
        invited = survey_invite(
            customer=customer,
            survey=survey,
            channel=channel,
            idempotency_key=extra.pop("key", f"test-invite:{next(_serial)}"),
            now=at,
            **extra,
        )
        assert invited.invitation is not None, invited.skipped
        return invited.invitation

    return make


_LINK = re.compile(r'href="(https://tenure\.example\.com/nps/[^"?]+\?score=(\d+))"')


def score_links(html: str) -> dict[int, str]:
    """The score links of a rendered survey email, by score."""
    return {int(score): url for url, score in _LINK.findall(html)}


def path_of(url: str) -> str:
    return url.removeprefix(PUBLIC)


def nps_events(customer: Customer | None = None) -> list[Event]:
    events = Event.objects.filter(name="nps_responded").order_by("id")
    if customer is not None:
        events = events.filter(customer=customer)
    return list(events)


_in_serial = itertools.count(1)


@pytest.fixture
def text_in(db, client):
    """text_in(number, body) -> the response: a signed Twilio inbound SMS."""

    def post(number: str, body: str):
        params = {
            "MessageSid": f"SMsurvey{next(_in_serial):026d}",
            "From": number,
            "To": "+15005550006",
            "Body": body,
            "NumMedia": "0",
        }
        path = "/webhooks/twilio/inbound"
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, params)
        return client.post(
            path,
            data=urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=signature,
        )

    return post
