"""NPS in the admin: surveys with their report, invitations and responses as
read-only big tables, the response filters and the detractors' comments; a
survey message's page with its invitation and answer."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.messaging.models import Category, Channel, Message
from apps.surveys.services import survey_respond

from .conftest import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def answers(survey, make_customer, invite):
    """Three answers from the last days: 10, 8 and 2 with a comment."""
    now = T0 + timedelta(days=1)
    for score, comment in ((10, ""), (8, "Fine"), (2, "The export broke <twice>")):
        invitation = invite(make_customer(), at=T0, journey="win-back")
        survey_respond(invitation=invitation, score=score, comment=comment, now=now)
    return survey


def test_the_survey_list_shows_recent_nps(staff, answers, time_machine):
    time_machine.move_to(T0 + timedelta(days=2), tick=False)

    page = staff.get(reverse("admin:surveys_survey_changelist"))

    assert page.status_code == 200
    # (1 promoter - 1 detractor) / 3 answers
    assert "+0.0 (3 answers)" in page.content.decode()


def test_the_report_shows_months_journeys_and_comments(staff, answers, time_machine):
    time_machine.move_to(T0 + timedelta(days=2), tick=False)

    page = staff.get(reverse("admin:surveys_survey_report", args=[answers.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "NPS report: Net Promoter Score" in html
    assert "<th>2026-03</th>" in html and "<th>win-back</th>" in html
    assert "The export broke &lt;twice&gt;" in html  # escaped
    assert "Fine" not in html  # a passive's comment is not a detractor's


def test_the_report_of_an_unknown_survey_is_404(staff, survey):
    assert staff.get(reverse("admin:surveys_survey_report", args=[999])).status_code == 404


def test_the_response_list_filters_detractor_comments(staff, answers):
    url = reverse("admin:surveys_surveyresponse_changelist")

    everything = staff.get(url).content.decode()
    detractors = staff.get(url, {"category__exact": "detractor", "comment": "yes"}).content.decode()

    assert "Fine" in everything
    assert "The export broke" in detractors and "Fine" not in detractors
    searched = staff.get(url, {"q": "export"}).content.decode()
    assert "The export broke" in searched and "Fine" not in searched


def test_invitations_are_listed_read_only_and_filterable(staff, answers, invite, make_customer):
    invite(make_customer(), at=T0 + timedelta(days=1))
    url = reverse("admin:surveys_surveyinvitation_changelist")

    listed = staff.get(url)
    unanswered = staff.get(url, {"answered": "no"})

    assert listed.status_code == unanswered.status_code == 200
    assert unanswered.content.decode().count("field-customer_link") == 1
    add = staff.get(reverse("admin:surveys_surveyinvitation_add"))
    assert add.status_code == 403


# --- the message page: the survey it carried -----------------------------------------


def survey_section(staff, message_id: int) -> str | None:
    page = staff.get(reverse("admin:messaging_message_change", args=[message_id]))
    assert page.status_code == 200
    found = re.search(
        r'<div class="inline-group" id="message-survey-group">(.*?)</fieldset>',
        page.content.decode(),
        re.S,
    )
    if found is None:
        return None
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def test_a_survey_messages_page_shows_the_invitation_and_the_answer(
    staff, survey, customer, invite
):
    invitation = invite(customer, at=T0)
    survey_respond(
        invitation=invitation, score=3, comment="Exports <break>", now=T0 + timedelta(hours=2)
    )

    shown = survey_section(staff, invitation.message_id)

    assert shown is not None
    assert f"{survey.name} #{invitation.pk} (Email) 2026-03-02 15:00" in shown
    assert "3 (detractor) , 2026-03-02 17:00 by Email" in shown
    assert "Exports &lt;break&gt;" in shown


def test_an_unanswered_survey_message_says_so(staff, survey, customer, invite):
    invitation = invite(customer, at=T0)

    assert "no answer yet" in survey_section(staff, invitation.message_id)


def test_a_message_that_carried_no_survey_has_no_survey_section(staff, customer):
    message = Message.objects.create(
        customer=customer,
        channel=Channel.EMAIL,
        category=Category.MARKETING,
        to_address=customer.email,
        idempotency_key="no-survey",
        created_at=T0,
        subject="Hello",
        html="<p>Hello</p>",
    )

    assert survey_section(staff, message.pk) is None
