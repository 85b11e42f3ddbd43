"""The `nps_survey` journey node end to end: validated against the surveys
that exist, run by the engine (invitation + message with the eleven links),
answered on the page or by SMS, and the answer's `nps_responded` event
moving the journey on (a wait_for_event, a branch on `{"nps": …}`, a goal)."""

import copy
from datetime import timedelta

import pytest
import time_machine

from apps.customers.models import Customer, Event
from apps.journeys.engine import enrollments_advance
from apps.journeys.enrollment import enrollment_start
from apps.journeys.graph import JourneyError, parse_journey
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.journeys.services import journey_import
from apps.journeys.simulation import journey_simulate
from apps.journeys.triggers import events_received
from apps.messaging.models import Message
from apps.surveys.models import SurveyInvitation, SurveyResponse

from .conftest import T0, nps_events, path_of, score_links

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)

FEEDBACK = {
    "slug": "feedback",
    "name": "Feedback",
    "trigger": {"type": "event", "event": "asked_for_feedback"},
    "reentry": {"policy": "always"},
    "start": "ask",
    "nodes": [
        {"id": "ask", "type": "nps_survey", "survey": "nps", "channel": "email", "next": "answer"},
        {
            "id": "answer",
            "type": "wait_for_event",
            "event": "nps_responded",
            "timeout": {"days": 7},
            "yes": "fan",
            "no": "done",
        },
        {
            "id": "fan",
            "type": "branch",
            "condition": {"nps": "promoter", "within_days": 7},
            "yes": "mark",
            "no": "done",
        },
        {"id": "mark", "type": "update_traits", "traits": {"advocate": True}, "next": "done"},
        {"id": "done", "type": "exit"},
    ],
}


def journey(**changes):
    data = {**copy.deepcopy(FEEDBACK), **copy.deepcopy(changes)}
    return journey_import(data, now=T0 - HOUR, publish=True)


def enroll(journey, customer, *, at=T0) -> Enrollment:
    enrollment = enrollment_start(journey=journey, customer_id=customer.pk, now=at)
    assert enrollment is not None
    return enrollment


def step(enrollment, node_id: str) -> EnrollmentStep:
    return EnrollmentStep.objects.get(enrollment=enrollment, node_id=node_id)


def hear(now):
    """What the ingestion listener's task does with live events."""
    events_received(event_ids=[e.pk for e in nps_events()], now=now)


# --- validation ------------------------------------------------------------------------------


def test_a_survey_node_naming_an_existing_survey_is_valid(survey):
    definition = parse_journey(copy.deepcopy(FEEDBACK))

    node = definition.node("ask")
    assert (node.type, node.survey, node.channel) == ("nps_survey", "nps", "email")


def test_an_unknown_survey_is_refused_by_name(survey):
    data = copy.deepcopy(FEEDBACK)
    data["nodes"][0]["survey"] = "npss"

    with pytest.raises(JourneyError) as caught:
        parse_journey(data)

    assert caught.value.lines() == ["nodes[ask].survey: unknown survey 'npss'"]
    assert parse_journey(data, check_refs=False).node("ask").survey == "npss"


def test_a_channel_the_survey_has_no_template_for_is_refused(survey):
    survey.sms_template = None
    survey.save()
    data = copy.deepcopy(FEEDBACK)
    data["nodes"][0]["channel"] = "sms"

    with pytest.raises(JourneyError) as caught:
        parse_journey(data)

    assert caught.value.lines() == [
        "nodes[ask].channel: survey 'nps' has no sms template; give it one in the admin or "
        "choose the other channel"
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("channel", "fax", "nodes[ask].channel: must be one of 'email' or 'sms' (got 'fax')"),
        ("survey", "not a slug", "nodes[ask].survey: must be a slug"),
        ("template", "nps-survey", "nodes[ask].template: unknown field"),
    ],
)
def test_bad_survey_node_fields_are_named(survey, field, value, message):
    data = copy.deepcopy(FEEDBACK)
    data["nodes"][0][field] = value

    with pytest.raises(JourneyError) as caught:
        parse_journey(data)

    assert any(line.startswith(message) for line in caught.value.lines()), caught.value.lines()


# --- the engine ------------------------------------------------------------------------------


def test_survey_answer_event_wait_and_branch_end_to_end(survey, customer, client):
    feedback = journey()
    enrollment = enroll(feedback, customer)

    enrollments_advance([enrollment.pk], now=T0)

    asked = step(enrollment, "ask")
    invitation = SurveyInvitation.objects.get()
    message = Message.objects.get()
    assert (asked.outcome, asked.message) == ("sent", message)
    assert asked.detail == f"sent: NPS survey 'nps' by email (message #{message.pk})"
    assert (invitation.message, invitation.journey, invitation.node_id) == (
        message,
        "feedback",
        "ask",
    )
    assert (invitation.enrollment_id, invitation.sent_at) == (enrollment.pk, T0)
    assert (message.journey, message.node_id, message.status) == ("feedback", "ask", "queued")
    links = score_links(message.html)
    assert sorted(links) == list(range(11))
    assert step(enrollment, "answer").outcome == "waiting"

    # The customer clicks 9 (a GET: nothing yet), then sends the page.
    with time_machine.travel(T0 + HOUR, tick=False):
        assert client.get(path_of(links[9])).status_code == 200
        assert nps_events() == []
        posted = client.post(path_of(links[9]), {"score": "9", "comment": "Great support"})
    assert posted.status_code == 302

    [event] = nps_events(customer)
    assert event.properties["journey"] == "feedback" and event.properties["category"] == "promoter"
    hear(T0 + HOUR)
    enrollment.refresh_from_db()
    assert enrollment.next_run_at == T0 + HOUR  # woken by the event

    enrollments_advance([enrollment.pk], now=T0 + HOUR)

    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.COMPLETED
    assert step(enrollment, "answer").outcome == "yes"
    fan = step(enrollment, "fan")
    assert (fan.outcome, fan.detail) == (
        "yes",
        "branch yes because latest NPS answer in the last 7 days is promoter",
    )
    assert Customer.objects.get(pk=customer.pk).traits["advocate"] is True


def test_the_answer_reaches_a_goal(survey, customer, client):
    feedback = journey(
        goal={"event": "nps_responded", "op": "since_enrolled"},
        nodes=[
            {"id": "ask", "type": "nps_survey", "survey": "nps", "channel": "email", "next": "w"},
            {"id": "w", "type": "wait", "duration": {"days": 7}, "next": "done"},
            {"id": "done", "type": "exit"},
        ],
    )
    enrollment = enroll(feedback, customer)
    enrollments_advance([enrollment.pk], now=T0)
    invitation = SurveyInvitation.objects.get()

    with time_machine.travel(T0 + HOUR, tick=False):
        client.post(f"/nps/{invitation.token}", {"score": "4"})
    hear(T0 + HOUR)

    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.CONVERTED


def test_an_sms_survey_answered_by_text_moves_the_journey(survey, customer, sms_consent, text_in):
    sms_consent(customer)
    data = copy.deepcopy(FEEDBACK)
    data["nodes"][0]["channel"] = "sms"
    feedback = journey(nodes=data["nodes"])
    enrollment = enroll(feedback, customer)
    enrollments_advance([enrollment.pk], now=T0)
    assert Message.objects.get().channel == "sms"

    with time_machine.travel(T0 + HOUR, tick=False):
        text_in(customer.phone, "2, nothing works")
    hear(T0 + HOUR)
    enrollments_advance([enrollment.pk], now=T0 + HOUR)

    assert SurveyResponse.objects.get().comment == "nothing works"
    assert step(enrollment, "answer").outcome == "yes"
    assert step(enrollment, "fan").outcome == "no"


def test_a_customer_surveyed_recently_is_skipped_with_the_reason(survey, customer):
    feedback = journey()
    first = enroll(feedback, customer)
    enrollments_advance([first.pk], now=T0)
    enrollments_advance([first.pk], now=T0 + 7 * 24 * HOUR)  # the wait times out: done
    first.refresh_from_db()
    assert first.state == Enrollment.State.COMPLETED

    later = T0 + 30 * 24 * HOUR
    second = enroll(feedback, customer, at=later)
    enrollments_advance([second.pk], now=later)

    asked = step(second, "ask")
    assert asked.outcome == "skipped"
    assert asked.detail == (
        "skipped: surveyed 30 days ago ('nps' on 2026-03-02); no customer is surveyed twice "
        "within 90 days (NPS_RESURVEY_AFTER_DAYS)"
    )
    assert SurveyInvitation.objects.count() == Message.objects.count() == 1
    assert step(second, "answer").outcome == "waiting"  # the journey goes on


def test_a_holdout_customer_is_not_surveyed(survey, customer):
    feedback = journey(holdout_percent=100)
    enrollment = enroll(feedback, customer)

    enrollments_advance([enrollment.pk], now=T0)

    assert (step(enrollment, "ask").outcome, step(enrollment, "ask").detail) == (
        "holdout",
        "holdout: not surveyed",
    )
    assert not SurveyInvitation.objects.exists()


def test_a_rerun_of_the_step_sends_nothing_twice(survey, customer):
    feedback = journey()
    enrollment = enroll(feedback, customer)
    enrollments_advance([enrollment.pk], now=T0)
    enrollments_advance([enrollment.pk], now=T0)  # a duplicated task

    assert SurveyInvitation.objects.count() == Message.objects.count() == 1


def test_a_survey_whose_template_went_missing_fails_the_enrollment_with_the_reason(
    survey, customer
):
    feedback = journey()
    survey.email_template = None
    survey.save()
    enrollment = enroll(feedback, customer)

    enrollments_advance([enrollment.pk], now=T0)

    enrollment.refresh_from_db()
    assert enrollment.state == Enrollment.State.FAILED
    assert step(enrollment, "ask").detail == "nps_survey 'nps': survey 'nps' has no email template"


def test_a_backtest_runs_the_survey_node_and_keeps_nothing(survey, customer):
    from apps.customers.schemas import TrackIn
    from apps.customers.services import ingest

    feedback = journey()
    ingest(
        [TrackIn(userId=customer.external_id, event="asked_for_feedback", timestamp=T0)],
        received_at=T0,
        source="import",
    )

    result = journey_simulate(feedback, days=7, now=T0 + 24 * HOUR)

    assert result.entered == 1
    assert result.messages["email"] == 1
    assert not SurveyInvitation.objects.exists()
    assert not Message.objects.exists()
    assert not Event.objects.filter(name="nps_responded").exists()
