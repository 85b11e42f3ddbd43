"""The survey page: a GET of a score link shows the score chosen and records
nothing (RELIABILITY.md 23); a POST records or updates the one response;
bad, expired, preview and oversize requests get a friendly 4xx."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from apps.customers.models import Customer
from apps.surveys.models import SurveyInvitation, SurveyResponse

from .conftest import T0, nps_events, path_of, score_links

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(hours=2)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def invitation(invite, customer) -> SurveyInvitation:
    return invite(customer)


def link(invitation: SurveyInvitation, score: int) -> str:
    return path_of(score_links(invitation.message.html)[score])


def test_the_email_carries_eleven_score_links_to_its_own_page(invitation):
    links = score_links(invitation.message.html)

    assert sorted(links) == list(range(11))
    assert all(f"/nps/{invitation.token}?score={n}" in url for n, url in links.items())
    for score in range(11):
        assert f"{score}: https://tenure.example.com/nps/{invitation.token}?score={score}" in (
            invitation.message.text
        )


def test_a_get_shows_the_score_chosen_and_records_nothing(client, invitation, customer):
    response = client.get(link(invitation, 7))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="score-7" value="7" checked' in page
    assert page.count(" checked") == 1
    assert "What is the main reason for your score?" in page
    assert 'name="comment"' in page and 'name="csrfmiddlewaretoken"' in page
    assert response["Cache-Control"].startswith("max-age=0")
    assert not SurveyResponse.objects.exists()
    assert nps_events() == []
    invitation.refresh_from_db()
    assert invitation.responded_at is None
    customer.refresh_from_db()
    assert "nps_score" not in customer.traits


def test_link_scanners_following_every_link_record_nothing(client, invitation):
    for score in range(11):
        for method in (client.get, client.head):
            assert method(link(invitation, score), HTTP_USER_AGENT="Mimecast").status_code == 200

    assert not SurveyResponse.objects.exists()
    assert nps_events() == []


@pytest.mark.parametrize("score", ["", "abc", "11", "-1", "7.5"])
def test_a_bad_score_in_the_link_shows_the_page_with_nothing_chosen(client, invitation, score):
    response = client.get(f"/nps/{invitation.token}?score={score}")

    assert response.status_code == 200
    assert " checked" not in response.content.decode()


def test_a_post_records_the_answer_the_event_and_the_traits(client, invitation, customer):
    response = client.post(
        link(invitation, 3), {"score": "3", "comment": "  Support took a week.  "}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/nps/{invitation.token}/thanks"
    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.category, answer.comment, answer.channel) == (
        3,
        "detractor",
        "Support took a week.",
        "email",
    )
    assert (answer.responded_at, answer.updated_at, answer.revision) == (NOW, NOW, 1)
    invitation.refresh_from_db()
    assert invitation.responded_at == NOW
    [event] = nps_events(customer)
    assert event.occurred_at == NOW
    assert event.properties == {
        "score": 3,
        "category": "detractor",
        "survey": "nps",
        "journey": "",
        "node_id": "",
        "channel": "email",
        "comment": "Support took a week.",
        "invitation_id": invitation.pk,
        "response_id": answer.pk,
        "revision": 1,
    }
    customer.refresh_from_db()
    assert customer.traits["nps_score"] == 3
    assert customer.traits["nps_category"] == "detractor"
    assert customer.traits["nps_responded_at"] == NOW.isoformat()

    thanks = client.get(response["Location"])
    assert thanks.status_code == 200
    assert "Thank you for your answer" in thanks.content.decode()
    assert "Support took a week." in thanks.content.decode()


def test_a_second_post_updates_the_one_response(client, invitation, clock, customer):
    client.post(link(invitation, 6), {"score": "6", "comment": ""})
    clock.move_to(NOW + timedelta(minutes=5))
    client.post(
        link(invitation, 9), {"score": "9", "comment": "Actually, the new reports are great"}
    )

    answer = SurveyResponse.objects.get()
    assert (answer.score, answer.category, answer.revision) == (9, "promoter", 2)
    assert answer.responded_at == NOW  # the first answer's time
    assert answer.updated_at == NOW + timedelta(minutes=5)
    assert [(e.properties["score"], e.properties["revision"]) for e in nps_events()] == [
        (6, 1),
        (9, 2),
    ]
    customer.refresh_from_db()
    assert (customer.traits["nps_score"], customer.traits["nps_category"]) == (9, "promoter")


def test_the_same_answer_posted_twice_records_one_event(client, invitation):
    for _ in range(2):
        response = client.post(link(invitation, 10), {"score": "10", "comment": "Love it"})
        assert response.status_code == 302

    assert SurveyResponse.objects.get().revision == 1
    assert len(nps_events()) == 1


def test_the_page_after_an_answer_shows_it_for_changing(client, invitation):
    client.post(link(invitation, 8), {"score": "8", "comment": "Good"})

    page = client.get(f"/nps/{invitation.token}").content.decode()

    assert 'id="score-8" value="8" checked' in page
    assert "You answered 8" in page and ">\nGood</textarea>" in page


def test_a_real_browser_answers_with_the_csrf_token_the_page_gave_it(invitation):
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(link(invitation, 9))
    token = page.context["csrf_token"]

    refused = browser.post(link(invitation, 9), {"score": "9"})
    assert refused.status_code == 403
    assert not SurveyResponse.objects.exists()

    answered = browser.post(link(invitation, 9), {"score": "9", "csrfmiddlewaretoken": str(token)})
    assert answered.status_code == 302
    assert SurveyResponse.objects.get().score == 9


def test_a_forged_post_without_the_cookie_records_nothing(invitation):
    forger = Client(enforce_csrf_checks=True)

    response = forger.post(link(invitation, 0), {"score": "0", "csrfmiddlewaretoken": "x" * 64})

    assert response.status_code == 403
    assert not SurveyResponse.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Choose a score from 0 to 10."),
        ({"score": "11"}, "Choose a score from 0 to 10."),
        ({"score": "ten"}, "Choose a score from 0 to 10."),
        ({"score": "5", "comment": "x" * 2001}, "at most 2000 characters"),
    ],
)
def test_a_bad_answer_is_a_400_naming_the_problem_and_records_nothing(
    client, invitation, data, message
):
    response = client.post(f"/nps/{invitation.token}", data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not SurveyResponse.objects.exists()
    assert nps_events() == []


@pytest.mark.parametrize(
    "token",
    ["nope", "A" * 22, "x" * 300, "%00", "preview..", "%ED%A0%80", "%FF%FE", "%zz", "x" * 20_000],
    ids=lambda t: t[:10],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_invalid_token_gets_a_friendly_page(client, invitation, token, method):
    response = getattr(client, method)(f"/nps/{token}?score=5", {"score": "5"})

    assert response.status_code == 404
    assert "This survey link does not work" in response.content.decode()
    assert not SurveyResponse.objects.exists()


@pytest.mark.parametrize(
    "score", ["9" * 5000, "\u0665", "\uff15", "05", "-1", "11", "1e400", "abc", "%00"]
)
def test_a_link_with_an_odd_score_shows_the_page_with_nothing_chosen(client, invitation, score):
    response = client.get(f"/nps/{invitation.token}?score={score}")

    assert response.status_code == 200
    chosen = 'value="5" checked' in response.content.decode()
    assert chosen == (score == "05")
    assert not SurveyResponse.objects.exists()


@pytest.mark.parametrize(
    "score", ["abc", "1e400", "", "-1", "11", "5\x00", "9" * 5000, "\uff15", "NaN", "5.0"]
)
def test_an_odd_score_posted_is_a_400_and_records_nothing(client, invitation, score):
    response = client.post(f"/nps/{invitation.token}", {"score": score, "comment": "ok"})

    assert response.status_code == 400
    assert "Choose a score from 0 to 10." in response.content.decode()
    assert not SurveyResponse.objects.exists()


def test_a_comment_with_a_nul_character_is_a_400_and_records_nothing(client, invitation):
    response = client.post(f"/nps/{invitation.token}", {"score": "8", "comment": "fi\x00ne"})

    assert response.status_code == 400
    assert "Null characters are not allowed." in response.content.decode()
    assert not SurveyResponse.objects.exists()


def test_an_over_long_comment_is_a_400_and_records_nothing(client, invitation):
    response = client.post(f"/nps/{invitation.token}", {"score": "8", "comment": "x" * 100_000})

    assert response.status_code == 400
    assert not SurveyResponse.objects.exists()


def test_a_thanks_page_before_any_answer_leads_back_to_the_survey(client, invitation):
    response = client.get(f"/nps/{invitation.token}/thanks")

    assert response.status_code == 302
    assert response["Location"] == f"/nps/{invitation.token}"
    assert client.get("/nps/unknown/thanks").status_code == 404


def test_an_expired_survey_says_so_and_takes_no_answer(client, invitation, clock):
    clock.move_to(invitation.expires_at)

    shown = client.get(link(invitation, 9))
    posted = client.post(link(invitation, 9), {"score": "9"})

    assert shown.status_code == posted.status_code == 410
    assert "This survey has closed" in shown.content.decode()
    assert f"{invitation.expires_at:%B %d, %Y}" in shown.content.decode()
    assert not SurveyResponse.objects.exists()


def test_an_oversize_body_is_refused_before_it_is_read(client, invitation, settings):
    settings.API_MAX_BODY_BYTES = 1000

    response = client.post(f"/nps/{invitation.token}", {"score": "5", "comment": "x" * 5000})

    assert response.status_code == 413
    assert not SurveyResponse.objects.exists()


def test_other_methods_are_refused(client, invitation):
    assert client.put(f"/nps/{invitation.token}").status_code == 405
    assert client.post(f"/nps/{invitation.token}/thanks").status_code == 405


def test_a_preview_link_shows_the_survey_and_records_nothing(client, survey):
    page = client.get("/nps/preview?score=4&template=nps-survey")
    posted = client.post("/nps/preview?template=nps-survey", {"score": "4"})
    odd = client.get("/nps/preview?score=4&template=%00")

    assert page.status_code == 200
    text = page.content.decode()
    assert "Preview" in text and survey.question in text
    assert 'id="score-4" value="4" checked' in text
    assert posted.status_code == 400
    assert odd.status_code == 200  # a bad template name: the default survey
    assert "This was a preview" in posted.content.decode()
    assert not SurveyResponse.objects.exists()


def test_an_answer_survives_its_customer_being_looked_up_by_another_link(
    client, invite, make_customer
):
    """Two customers' invitations: each token answers its own invitation only."""
    first, second = make_customer(), make_customer()
    a, b = invite(first), invite(second)

    client.post(link(a, 10), {"score": "10"})
    client.post(link(b, 2), {"score": "2"})

    by_customer = dict(SurveyResponse.objects.values_list("customer__external_id", "score"))
    assert by_customer == {first.external_id: 10, second.external_id: 2}
    assert Customer.objects.get(pk=first.pk).traits["nps_category"] == "promoter"
