"""The demo's survey content: the default NPS survey and its loader, the
survey templates, the detractor and promoter follow-up journeys, and the
win-back journey's closing survey, all in `make run`'s order."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.customers.models import Customer
from apps.journeys.engine import enrollments_advance
from apps.journeys.graph import parse_journey
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.triggers import events_received
from apps.messaging.models import Message, Template
from apps.messaging.rendering import render
from apps.messaging.sms_segments import sms_segments
from apps.surveys.fixtures import surveys_load
from apps.surveys.models import Survey
from apps.surveys.services import survey_respond

from .conftest import ROOT, SURVEYS, T0, TEMPLATES, nps_events, quietly, score_links

pytestmark = pytest.mark.django_db

JOURNEYS = ROOT / "fixtures" / "journeys"
SEGMENTS = ROOT / "fixtures" / "segments.json"


def load_surveys(*args: str) -> str:
    out = StringIO()
    call_command("load_surveys", *args, stdout=out)
    return out.getvalue()


def journey_file(slug: str) -> dict:
    return json.loads((JOURNEYS / f"{slug}.json").read_text(encoding="utf-8"))


@pytest.fixture
def templates(db):
    quietly("load_templates", str(TEMPLATES), "--only-new")


def test_the_default_survey_loads_once_and_keeps_a_marketers_edits(templates):
    assert load_surveys(str(SURVEYS)) == (
        "surveys.json: 1 survey(s) created, 0 updated, 0 kept as they were\n"
    )
    survey = Survey.objects.get()
    assert (survey.slug, survey.email_template.slug, survey.sms_template.slug) == (
        "nps",
        "nps-survey",
        "nps-survey-sms",
    )
    Survey.objects.update(question="Edited in the admin")

    assert load_surveys(str(SURVEYS), "--only-new").endswith("0 updated, 1 kept as they were\n")
    assert Survey.objects.get().question == "Edited in the admin"
    assert load_surveys(str(SURVEYS)).endswith("1 updated, 0 kept as they were\n")
    assert Survey.objects.get().question.startswith("How likely")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email_template": "nope"}, "surveys[0] ('nps'): email_template: unknown template 'nope'"),
        (
            {"sms_template": "nps-survey"},
            "surveys[0] ('nps'): sms_template: 'nps-survey' is an email template, not an sms one",
        ),
        (
            {"email_template": None, "sms_template": None},
            "surveys[0] ('nps'): needs an email_template or an sms_template (or both)",
        ),
        ({"question": ""}, "surveys[0] ('nps'): question: String should have at least 1"),
        ({"colour": "red"}, "surveys[0] ('nps'): colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_survey_is_refused_by_name_and_nothing_is_written(templates, change, message):
    items = json.loads(SURVEYS.read_text(encoding="utf-8"))
    good = {**items[0], "slug": "other"}
    items[0].update(change)

    with pytest.raises(ValueError) as caught:
        surveys_load([items[0], good])

    assert str(caught.value).startswith(message)
    assert not Survey.objects.exists()


def test_the_command_names_bad_files(tmp_path, templates):
    bad = tmp_path / "s.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(CommandError, match=r"s\.json: not valid JSON"):
        load_surveys(str(bad))
    with pytest.raises(CommandError, match=r"nowhere\.json: no such file"):
        load_surveys(str(tmp_path / "nowhere.json"))
    bad.write_text('{"slug": "nps"}', encoding="utf-8")
    with pytest.raises(CommandError, match="the file must hold a list of surveys"):
        load_surveys(str(bad))


def test_the_survey_email_shows_eleven_buttons_and_the_sms_fits(templates):
    customer = Customer(pk=1, external_id="x", email="x@example.com", traits={"first_name": "Jo"})
    email = Template.objects.get(slug="nps-survey")
    message = Message(pk=1, customer=customer, channel="email")

    preview = render(email, customer=customer, now=T0, message=message)
    real = render(
        email,
        customer=customer,
        now=T0,
        message=message,
        context={"links": {"nps": [f"https://tenure.example.com/nps/tok?score={n}" for n in
                                   range(11)]}},
    )  # fmt: skip

    assert preview.subject == "Jo, how are we doing?"
    assert preview.html.count("/nps/preview?score=") == 11
    assert "template=nps-survey" in preview.html
    assert sorted(score_links(real.html)) == list(range(11))
    assert "10: https://tenure.example.com/nps/tok?score=10" in real.text
    sms = render(Template.objects.get(slug="nps-survey-sms"), customer=customer, now=T0)
    assert sms_segments(sms.body) == ("GSM-7", 1)  # one SMS with the demo company's name
    assert sms.body.endswith("Reply STOP to opt out")


def test_the_apology_quotes_the_comment_when_there_is_one(templates):
    customer = Customer(pk=1, external_id="x", email="x@example.com", traits={})
    apology = Template.objects.get(slug="nps-detractor-apology")
    event = {"name": "nps_responded", "properties": {"score": 2, "comment": "Too slow"}}

    with_comment = render(apology, customer=customer, now=T0, context={"event": event})
    without = render(apology, customer=customer, now=T0, context={"event": None})

    assert "Too slow" in with_comment.html and 'You wrote: "Too slow"' in with_comment.text
    assert "You wrote" not in without.html and "You wrote" not in without.text


def test_the_follow_up_journeys_are_valid_and_triggered_by_answers(templates):
    quietly("load_surveys", str(SURVEYS))
    quietly("load_segments", str(SEGMENTS), "--only-new")

    detractor = parse_journey(journey_file("nps-detractor-follow-up"))
    promoter = parse_journey(journey_file("nps-promoter-referral"))
    win_back = parse_journey(journey_file("win-back"))

    assert detractor.trigger.event == promoter.trigger.event == "nps_responded"
    assert detractor.trigger.where == {"category": "detractor"}
    assert promoter.trigger.where == {"category": "promoter"}
    assert [n.type for n in detractor.nodes] == ["webhook", "wait", "email", "exit"]
    survey_node = win_back.node("nps")
    assert (survey_node.survey, survey_node.channel) == ("nps", "email")
    assert win_back.node("before-survey").duration.days == 3
    assert (
        win_back.successors("last-chance-sms")
        == win_back.successors("last-chance-email")
        == ["before-survey"]
    )


@pytest.fixture
def demo(templates, settings):
    """make run's content, in its order."""
    settings.JOURNEY_WEBHOOK_SECRET = ""
    quietly("load_surveys", str(SURVEYS), "--only-new")
    quietly("load_segments", str(SEGMENTS), "--only-new")
    quietly("load_journeys", str(JOURNEYS), "--only-new")


def test_a_detractor_alerts_the_team_and_gets_an_apology(demo, customer, invite):
    invitation = invite(customer)
    survey_respond(
        invitation=invitation,
        score=3,
        comment="Support never answered",
        now=T0 + timedelta(hours=1),
    )
    events_received(event_ids=[e.pk for e in nps_events()], now=T0 + timedelta(hours=1))

    enrollment = Enrollment.objects.get(journey__slug="nps-detractor-follow-up")
    assert enrollment.context["event"]["properties"]["comment"] == "Support never answered"
    enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=1))
    alert = EnrollmentStep.objects.get(enrollment=enrollment, node_id="alert-team")
    # No signing secret is configured here: refused, never sent unsigned; the journey goes on.
    assert alert.outcome == "failed" and "no signing secret" in alert.detail
    enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=2, minutes=1))

    apology = Message.objects.get(template__slug="nps-detractor-apology")
    assert apology.status == "queued"
    assert "Support never answered" in apology.html
    assert not Enrollment.objects.filter(journey__slug="nps-promoter-referral").exists()


def test_without_a_signing_secret_the_alert_fails_once_quietly_and_the_journey_goes_on(
    demo, customer, invite, caplog
):
    """`make run`'s default (no JOURNEY_WEBHOOK_SECRET): the alert is never
    made, nothing is retried and nothing is logged as a problem; the step says
    what to set, once per detractor."""
    survey_respond(invitation=invite(customer), score=0, now=T0 + timedelta(hours=1))
    events_received(event_ids=[e.pk for e in nps_events()], now=T0 + timedelta(hours=1))
    enrollment = Enrollment.objects.get(journey__slug="nps-detractor-follow-up")

    with caplog.at_level("INFO"):
        enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=1))
        enrollments_advance([enrollment.pk], now=T0 + timedelta(hours=1, minutes=30))

    (alert,) = EnrollmentStep.objects.filter(enrollment=enrollment, node_id="alert-team")
    assert alert.outcome == "failed"
    assert alert.detail == (
        "POST https://hooks.example.com/tenure/nps-detractor failed: "
        "no signing secret: set JOURNEY_WEBHOOK_SECRET"
    )
    assert [r for r in caplog.records if r.levelname in ("WARNING", "ERROR", "CRITICAL")] == []
    enrollment.refresh_from_db()
    assert (enrollment.state, enrollment.current_node) == ("active", "give-them-an-hour")


def test_promoters_are_thanked_the_next_day_with_a_referral_offer(
    demo, make_customer, invite, settings
):
    people = [make_customer() for _ in range(6)]
    for person in people:
        survey_respond(invitation=invite(person), score=10, now=T0 + timedelta(hours=1))
    events_received(event_ids=[e.pk for e in nps_events()], now=T0 + timedelta(hours=1))
    enrollments = list(Enrollment.objects.filter(journey__slug="nps-promoter-referral"))
    assert len(enrollments) == 6
    ids = [e.pk for e in enrollments]

    enrollments_advance(ids, now=T0 + timedelta(hours=1))
    assert not Message.objects.filter(template__slug="nps-promoter-referral").exists()
    enrollments_advance(ids, now=T0 + timedelta(days=1, hours=1))

    sent = Message.objects.filter(template__slug="nps-promoter-referral")
    reached = sum(not e.is_holdout for e in enrollments)
    assert sent.count() == reached
    assert not Enrollment.objects.filter(journey__slug="nps-detractor-follow-up").exists()
