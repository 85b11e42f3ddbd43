"""The pages a customer reaches from a message, in the browser: the NPS
survey from its email's score link, the one-click unsubscribe page and the
preference centre. The links are the ones the send path rendered into the
message, with PUBLIC_BASE_URL pointed at the live server."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.customers.models import Customer
from apps.messaging.models import Channel, ConsentRecord, Message, Suppression
from apps.messaging.services import message_send
from apps.surveys.models import SurveyResponse
from apps.surveys.services import survey_invite
from tests.messaging.sending import make_template
from tests.surveys.conftest import SURVEYS, TEMPLATES, quietly

pytestmark = pytest.mark.usefixtures("transactional_db")


@pytest.fixture(autouse=True)
def public_links(settings, live_server):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.FREQUENCY_CAP_EMAIL = ""
    settings.SEND_HOURS_EMAIL = ""
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = False


@pytest.fixture
def ada() -> Customer:
    return Customer.objects.create(
        external_id="ada", email="ada@example.com", timezone="Europe/London",
        traits={"first_name": "Ada"},
    )  # fmt: skip


def hrefs(html: str, pattern: str) -> list[str]:
    return re.findall(rf'href="({re.escape(pattern)}[^"]*)"', html)


def test_a_customer_answers_the_nps_survey_from_the_email_link(page, live_server, ada):
    quietly("load_templates", str(TEMPLATES), "--only-new")
    quietly("load_surveys", str(SURVEYS), "--only-new")
    invited = survey_invite(customer=ada, survey="nps", channel=Channel.EMAIL,
                            idempotency_key="e2e-nps", now=timezone.now())  # fmt: skip
    assert invited.message is not None and invited.message.status == Message.Status.QUEUED
    links = hrefs(invited.message.html, f"{live_server.url}/nps/")
    by_score = {int(url.rsplit("=", 1)[1]): url for url in links if "?score=" in url}
    assert sorted(by_score) == list(range(11))

    page.goto(by_score[9].replace("&amp;", "&"))
    expect(page.locator("#score-9")).to_be_checked()
    expect(page.locator("#score-3")).not_to_be_checked()
    assert not SurveyResponse.objects.exists()  # opening the link records nothing

    page.get_by_role("textbox").fill("The weekly report saves me an hour.")
    page.get_by_role("button", name="Send my answer").click()

    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    expect(page.get_by_text("The weekly report saves me an hour.")).to_be_visible()
    response = SurveyResponse.objects.get()
    assert (response.score, response.comment) == (9, "The weekly report saves me an hour.")
    assert response.customer_id == ada.pk


def marketing_email(ada: Customer) -> Message:
    template = make_template(slug="tips", topic="product-tips")
    make_template(slug="offers", topic="offers")  # a second topic on the preferences page
    message = message_send(customer=ada, template=template, idempotency_key="e2e-tips",
                           now=timezone.now())  # fmt: skip
    assert message.status == Message.Status.QUEUED, message.reason or message.error
    return message


def test_one_click_unsubscribe_from_the_email_link(page, live_server, ada):
    message = marketing_email(ada)
    (unsubscribe,) = hrefs(message.html, f"{live_server.url}/u/")

    page.goto(unsubscribe)
    expect(page.get_by_role("heading", name=re.compile("Unsubscribe"))).to_be_visible()
    assert not Suppression.objects.exists()  # the GET only asks

    page.get_by_role("button", name="Unsubscribe").click()

    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address) == (Channel.EMAIL, "ada@example.com")
    assert suppression.reason == Suppression.Reason.UNSUBSCRIBE
    assert suppression.lifted_at is None


def test_the_preference_centre_turns_a_topic_off(page, live_server, ada):
    message = marketing_email(ada)
    (preferences,) = hrefs(message.html, f"{live_server.url}/preferences/")

    page.goto(preferences)
    expect(page.get_by_role("heading", name="What would you like to receive?")).to_be_visible()
    tips = page.get_by_role("checkbox", name=re.compile("Product tips emails"))
    offers = page.get_by_role("checkbox", name=re.compile("Offers emails"))
    expect(tips).to_be_checked()
    tips.uncheck()
    page.get_by_role("button", name="Save my preferences").click()

    expect(page.get_by_role("status")).to_have_text("Thank you: your preferences are saved.")
    expect(tips).not_to_be_checked()
    expect(offers).to_be_checked()
    record = ConsentRecord.objects.get(customer=ada, channel=Channel.EMAIL, topic="product-tips")
    assert (record.status, record.source) == (
        ConsentRecord.Status.REVOKED,
        ConsentRecord.Source.PREFERENCES,
    )
    assert record.wording  # the box's words, as the customer saw them
    assert not ConsentRecord.objects.filter(topic="offers", status="revoked").exists()
