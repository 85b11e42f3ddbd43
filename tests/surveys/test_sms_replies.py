"""An SMS survey answered by texting a number back, through the real, signed
Twilio inbound webhook: matched to the sender's latest open SMS invitation,
within NPS_SMS_REPLY_HOURS; anything else is left to tracking."""

from datetime import timedelta

import pytest
import time_machine

from apps.surveys.models import SurveyResponse
from apps.surveys.services import parse_score_reply
from apps.tracking.models import InboundSms

from .conftest import T0, nps_events

pytestmark = pytest.mark.django_db


@pytest.fixture
def texted(customer, sms_consent, invite):
    """The customer was sent the SMS survey at T0."""
    sms_consent(customer)
    return invite(customer, "sms")


def reply_text(response) -> str:
    body = response.content.decode()
    return body.split("<Message>")[1].split("</Message>")[0] if "<Message>" in body else ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9", (9, "")),
        (" 10 ", (10, "")),
        ("0", (0, "")),
        ("7.", (7, "")),
        ("8/10", (8, "")),
        ("9 out of 10!", (9, "")),
        ("6, support was slow", (6, "support was slow")),
        ("3 - too expensive\nand buggy", (3, "too expensive\nand buggy")),
        ("100", None),
        ("11", None),
        ("1st of May", None),
        ("-5", None),
        ("nine", None),
        ("", None),
    ],
)
def test_what_counts_as_a_score(text, expected):
    assert parse_score_reply(text) == expected


def test_a_texted_number_answers_the_survey_and_asks_why(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        response = text_in(customer.phone, "4")

    assert response.status_code == 200
    assert reply_text(response) == "Thanks! What is the main reason for your score?"
    answer = SurveyResponse.objects.get()
    assert (answer.invitation, answer.score, answer.channel, answer.comment) == (
        texted,
        4,
        "sms",
        "",
    )
    inbound = InboundSms.objects.get()
    assert inbound.kind == InboundSms.Kind.REPLY
    assert inbound.handled_by == "take_nps_reply"
    [event] = nps_events(customer)
    assert event.properties["category"] == "detractor"


def test_the_next_text_is_the_comment(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        text_in(customer.phone, "4")
    with time_machine.travel(T0 + timedelta(minutes=12), tick=False):
        response = text_in(customer.phone, "The app keeps logging me out")

    assert reply_text(response).startswith("Thank you for your answer")
    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.comment, answer.revision) == (
        4,
        "The app keeps logging me out",
        2,
    )
    assert [e.properties["comment"] for e in nps_events(customer)] == [
        "",
        "The app keeps logging me out",
    ]

    # Once there is a comment, further free text is an ordinary reply.
    with time_machine.travel(T0 + timedelta(minutes=13), tick=False):
        text_in(customer.phone, "Also, hi")
    assert SurveyResponse.objects.get().comment == "The app keeps logging me out"
    assert InboundSms.objects.order_by("id").last().kind == InboundSms.Kind.TEXT


def test_a_score_with_a_comment_is_thanked_at_once(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        response = text_in(customer.phone, "10 - best tool we use")

    assert reply_text(response).startswith("Thank you for your answer")
    assert SurveyResponse.objects.get().comment == "best tool we use"


def test_a_second_number_corrects_the_answer(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(minutes=10), tick=False):
        text_in(customer.phone, "5")
        text_in(customer.phone, "8")

    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.category, answer.revision) == (8, "passive", 2)


def test_the_latest_open_invitation_of_the_number_is_answered(
    text_in, make_customer, sms_consent, invite, settings
):
    """Two customers share a phone number; each was sent a survey. The reply
    answers the most recent one."""
    settings.NPS_RESURVEY_AFTER_DAYS = 1
    first = make_customer(phone="+14155550777")
    second = make_customer(phone="+14155550777")
    sms_consent(first)
    sms_consent(second)
    older = invite(first, "sms", at=T0)
    newer = invite(second, "sms", at=T0 + timedelta(hours=1))

    with time_machine.travel(T0 + timedelta(hours=2), tick=False):
        text_in("+14155550777", "9")

    answer = SurveyResponse.objects.get()
    assert answer.invitation == newer and answer.customer == second
    assert older.pk != newer.pk


def test_a_number_after_the_reply_window_is_an_ordinary_text(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(hours=72, seconds=1), tick=False):
        response = text_in(customer.phone, "9")

    assert response.status_code == 200
    assert not SurveyResponse.objects.exists()
    assert InboundSms.objects.get().kind == InboundSms.Kind.TEXT


def test_an_email_survey_is_not_answered_by_text(text_in, customer, invite):
    invite(customer, "email")

    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        text_in(customer.phone, "9")

    assert not SurveyResponse.objects.exists()


def test_a_number_from_a_stranger_is_an_ordinary_text(text_in, texted):
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        text_in("+14155550999", "9")

    assert not SurveyResponse.objects.exists()
    assert InboundSms.objects.get().kind == InboundSms.Kind.TEXT


def test_stop_is_still_stop_during_a_survey(text_in, texted, customer):
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        text_in(customer.phone, "STOP")

    assert not SurveyResponse.objects.exists()
    assert InboundSms.objects.get().kind == InboundSms.Kind.OPT_OUT


def test_a_retried_webhook_records_the_answer_once(client, texted, customer):
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    from .conftest import PUBLIC, TWILIO_TOKEN

    params = {"MessageSid": "SMretry", "From": customer.phone, "Body": "7", "To": "+15005550006"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        PUBLIC + "/webhooks/twilio/inbound", params
    )
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        for _ in range(2):
            client.post(
                "/webhooks/twilio/inbound",
                data=urlencode(params),
                content_type="application/x-www-form-urlencoded",
                HTTP_X_TWILIO_SIGNATURE=signature,
            )

    assert SurveyResponse.objects.get().revision == 1
    assert len(nps_events(customer)) == 1
