"""Inviting (one invitation per key, re-survey throttling) and answering
(validation, one response per invitation, also under concurrent writers)."""

import threading
from datetime import timedelta

import pytest
from django.db import close_old_connections

from apps.messaging.consent import suppression_add
from apps.messaging.models import Channel, Message, Suppression
from apps.surveys.models import SurveyInvitation, SurveyResponse
from apps.surveys.services import (
    SurveyClosed,
    UnknownSurvey,
    survey_invite,
    survey_respond,
)

from .conftest import T0, nps_events, score_links

pytestmark = pytest.mark.django_db


def test_an_invitation_is_sent_once_per_key(survey, customer):
    first = survey_invite(
        customer=customer, survey="nps", channel="email", idempotency_key="k1", now=T0
    )
    again = survey_invite(
        customer=customer,
        survey="nps",
        channel="email",
        idempotency_key="k1",
        now=T0 + timedelta(minutes=1),
    )

    assert again.invitation == first.invitation and again.message == first.message
    assert SurveyInvitation.objects.count() == Message.objects.count() == 1
    invitation = first.invitation
    assert (invitation.sent_at, invitation.expires_at) == (T0, T0 + timedelta(days=30))
    assert first.message.status == Message.Status.QUEUED
    assert first.message.subject == "Ada, how are we doing?"
    assert len(score_links(first.message.html)) == 11
    assert invitation.token in first.message.html


def test_an_sms_survey_asks_for_a_reply_with_a_number(survey, customer, sms_consent):
    sms_consent(customer)

    invited = survey_invite(
        customer=customer, survey=survey, channel="sms", idempotency_key="k", now=T0
    )

    assert invited.message.channel == Channel.SMS
    assert invited.message.to_address == customer.phone
    assert "Reply with a number from 0 (not likely) to 10 (very likely)" in invited.message.text
    assert invited.invitation.channel == "sms"


def test_a_customer_is_not_surveyed_twice_within_the_window(survey, customer, settings):
    survey_invite(customer=customer, survey=survey, channel="email", idempotency_key="a", now=T0)

    day_89 = T0 + timedelta(days=89)
    skipped = survey_invite(
        customer=customer, survey=survey, channel="email", idempotency_key="b", now=day_89
    )
    assert (skipped.invitation, skipped.message) == (None, None)
    assert skipped.skipped == (
        "skipped: surveyed 89 days ago ('nps' on 2026-03-02); no customer is surveyed twice "
        "within 90 days (NPS_RESURVEY_AFTER_DAYS)"
    )

    day_90 = T0 + timedelta(days=90)
    again = survey_invite(
        customer=customer, survey=survey, channel="email", idempotency_key="c", now=day_90
    )
    assert again.message is not None
    assert SurveyInvitation.objects.count() == 2


def test_the_window_is_a_setting(survey, customer, settings):
    settings.NPS_RESURVEY_AFTER_DAYS = 7
    survey_invite(customer=customer, survey=survey, channel="email", idempotency_key="a", now=T0)

    later = survey_invite(
        customer=customer,
        survey=survey,
        channel="sms",
        idempotency_key="b",
        now=T0 + timedelta(days=7, seconds=1),
    )

    assert later.invitation is not None and not later.skipped


def test_a_survey_a_policy_refused_does_not_count_as_surveyed(survey, customer):
    suppression_add(
        channel=Channel.EMAIL,
        address=customer.email,
        reason=Suppression.Reason.BOUNCE,
        source="test",
        now=T0 - timedelta(days=1),
    )
    refused = survey_invite(
        customer=customer, survey=survey, channel="email", idempotency_key="a", now=T0
    )
    assert refused.message.status == Message.Status.SUPPRESSED
    assert refused.invitation.sent_at is None

    customer.phone = "+14155550199"
    customer.save()
    from apps.messaging.consent import consent_record
    from apps.messaging.models import ConsentRecord

    consent_record(
        customer=customer,
        channel=Channel.SMS,
        status=ConsentRecord.Status.GRANTED,
        source=ConsentRecord.Source.ADMIN,
        recorded_at=T0,
    )
    by_sms = survey_invite(
        customer=customer,
        survey=survey,
        channel="sms",
        idempotency_key="b",
        now=T0 + timedelta(hours=1),
    )
    assert by_sms.message.status == Message.Status.QUEUED and not by_sms.skipped


def test_a_survey_invitation_made_after_now_is_not_seen_by_a_backtest(survey, customer):
    survey_invite(
        customer=customer,
        survey=survey,
        channel="email",
        idempotency_key="later",
        now=T0 + timedelta(days=10),
    )

    earlier = survey_invite(
        customer=customer, survey=survey, channel="email", idempotency_key="b", now=T0
    )

    assert earlier.invitation is not None


def test_unknown_surveys_and_channels_are_refused_by_name(survey, customer):
    with pytest.raises(UnknownSurvey, match="survey 'nope' does not exist"):
        survey_invite(
            customer=customer, survey="nope", channel="email", idempotency_key="a", now=T0
        )
    with pytest.raises(ValueError, match="channel: must be 'email' or 'sms', got 'fax'"):
        survey_invite(customer=customer, survey=survey, channel="fax", idempotency_key="a", now=T0)
    survey.sms_template = None
    survey.save()
    with pytest.raises(ValueError, match="survey 'nps' has no sms template"):
        survey_invite(customer=customer, survey=survey, channel="sms", idempotency_key="a", now=T0)
    assert not SurveyInvitation.objects.exists()


@pytest.mark.parametrize("score", [-1, 11, 7.0, "7", True, None])
def test_a_score_outside_0_to_10_is_refused(invite, customer, score):
    invitation = invite(customer)

    with pytest.raises(ValueError, match="score: must be a whole number from 0 to 10"):
        survey_respond(invitation=invitation, score=score, now=T0)
    assert not SurveyResponse.objects.exists()


def test_a_long_comment_is_refused_and_writes_nothing(invite, customer):
    invitation = invite(customer)

    with pytest.raises(ValueError, match="comment: at most 2000 characters, got 2001"):
        survey_respond(invitation=invitation, score=5, comment="x" * 2001, now=T0)
    assert not SurveyResponse.objects.exists()
    assert nps_events() == []


def test_an_answer_after_the_survey_closed_is_refused(invite, customer):
    invitation = invite(customer)

    with pytest.raises(SurveyClosed, match="this survey closed on April 01, 2026"):
        survey_respond(invitation=invitation, score=9, now=invitation.expires_at)
    assert not SurveyResponse.objects.exists()


def test_a_comment_left_out_keeps_the_stored_one(invite, customer):
    invitation = invite(customer)
    survey_respond(invitation=invitation, score=4, comment="Too slow", now=T0)

    answered = survey_respond(invitation=invitation, score=5, now=T0 + timedelta(minutes=1))

    assert (answered.response.score, answered.response.comment) == (5, "Too slow")
    assert answered.changed and not answered.created


def test_categories_follow_the_score(invite, make_customer):
    expected = {0: "detractor", 6: "detractor", 7: "passive", 8: "passive", 9: "promoter"}
    for score, category in {**expected, 10: "promoter"}.items():
        answered = survey_respond(invitation=invite(make_customer()), score=score, now=T0)
        assert answered.response.category == category


@pytest.mark.django_db(transaction=True)
def test_concurrent_answers_make_one_response(survey, customer):
    """Eight writers at once on one invitation (double clicks, tabs): one
    response, each real change one revision and one event, nothing lost."""
    invitation = survey_invite(
        customer=customer, survey=survey, channel="email", idempotency_key="k", now=T0
    ).invitation
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def answer(score: int) -> None:
        try:
            barrier.wait()
            survey_respond(invitation=invitation, score=score, now=T0 + timedelta(minutes=1))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=answer, args=(score % 2 + 8,)) for score in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    response = SurveyResponse.objects.get()
    events = nps_events(customer)
    assert len(events) == response.revision
    assert [e.properties["revision"] for e in events] == list(range(1, response.revision + 1))
    assert events[-1].properties["score"] == response.score
    assert 1 <= response.revision <= 8
