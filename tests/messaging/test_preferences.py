"""`/preferences/<token>`: the customer's channels and email topics as the
consent ledger has them; saving appends their choices to it."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client

from apps.messaging import links
from apps.messaging.consent import suppression_add, unsubscribe
from apps.messaging.models import Channel, ConsentRecord, Message, Suppression
from apps.messaging.selectors import active_suppression, consent_state
from tests.messaging.sending import grant, make_customer, make_template, revoke

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)"


@pytest.fixture(autouse=True)
def company(settings):
    settings.COMPANY_NAME = "Acme & Co"
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = False


@pytest.fixture
def ada():
    return make_customer("ada", email="ada@example.com", phone="+14155550123", first_name="Ada")


@pytest.fixture
def topics():
    make_template(topic="product-news")
    make_template(topic="offers")
    make_template(topic="offers")  # topics are listed once
    make_template(topic="")
    make_template(channel=Channel.SMS, topic="")


@pytest.fixture
def browser():
    """A customer's browser: cookies kept, CSRF enforced as in production."""
    return Client(enforce_csrf_checks=True, HTTP_USER_AGENT=BROWSER, REMOTE_ADDR="203.0.113.9")


def path_of(customer_or_message) -> str:
    return links.preferences_url(customer_or_message).removeprefix("https://tenure.example.com")


def save(client: Client, path: str, **boxes):
    """GET the page (for its CSRF cookie and token), then POST the boxes that are ticked."""
    page = client.get(path)
    token = page.context["csrf_token"]
    data = {"csrfmiddlewaretoken": str(token), **{k: "on" for k, on in boxes.items() if on}}
    return client.post(path, data)


def boxes(page) -> dict[str, bool]:
    form = page.context["form"]
    return {name: bool(form[name].value()) for name in form.fields}


def test_the_page_shows_channels_and_topics_with_their_state_from_the_ledger(browser, ada, topics):
    grant(ada, Channel.SMS, at=AT)
    revoke(ada, Channel.EMAIL, topic="offers", at=AT)

    page = browser.get(path_of(ada))

    assert page.status_code == 200
    assert boxes(page) == {
        "channel_email": True,  # never said: marketing email needs no opt-in here
        "channel_sms": True,
        "topic_offers": False,
        "topic_product-news": True,
    }
    html = page.content.decode()
    assert "Acme &amp; Co" in html and "Offers emails" in html and "Product news emails" in html
    assert 'name="viewport"' in html and "/admin/" not in html
    assert "ada@example.com" not in html  # masked: a***@example.com
    assert not ConsentRecord.objects.filter(source="preferences").exists()  # a GET writes nothing


def test_sms_is_off_until_the_customer_opts_in(browser, ada):
    page = browser.get(path_of(ada))

    assert boxes(page)["channel_sms"] is False


def test_email_is_off_until_opt_in_when_the_setting_requires_it(browser, ada, settings):
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = True

    page = browser.get(path_of(ada))

    assert boxes(page)["channel_email"] is False


def test_only_the_channels_a_customer_can_be_reached_on_are_offered(browser, topics):
    no_phone = make_customer("bob", email="bob@example.com")

    page = browser.get(path_of(no_phone))

    assert set(boxes(page)) == {"channel_email", "topic_offers", "topic_product-news"}


def test_saving_writes_the_choices_to_the_ledger_with_wording_ip_and_browser(browser, ada, topics):
    response = save(browser, path_of(ada), channel_email=True, channel_sms=True, topic_offers=True)

    assert response.status_code == 302
    assert response["Location"].endswith("?saved=1")
    records = {(r.channel, r.topic): r for r in ConsentRecord.objects.filter(source="preferences")}
    assert {key: r.status for key, r in records.items()} == {
        ("email", ""): "granted",
        ("sms", ""): "granted",
        ("email", "product-news"): "revoked",
    }
    sms = records[("sms", "")]
    assert sms.wording.startswith("Text messages from Acme & Co. Sent to +14•••••••23.")
    assert "reply STOP" in sms.wording
    assert (sms.ip_address, sms.user_agent) == ("203.0.113.9", BROWSER)


def test_the_round_trip_shows_the_saved_state_with_a_thank_you(browser, ada, topics):
    save(browser, path_of(ada), channel_email=True, channel_sms=True, topic_offers=True)

    page = browser.get(path_of(ada) + "?saved=1")

    assert "Thank you: your preferences are saved." in page.content.decode()
    assert boxes(page) == {
        "channel_email": True,
        "channel_sms": True,
        "topic_offers": True,
        "topic_product-news": False,
    }
    assert consent_state(ada, Channel.SMS) is True
    assert consent_state(ada, Channel.EMAIL, "product-news") is False


def test_saving_again_without_changes_writes_nothing_new(browser, ada, topics):
    save(browser, path_of(ada), channel_email=True, topic_offers=True)
    written = ConsentRecord.objects.count()

    save(browser, path_of(ada), channel_email=True, topic_offers=True)

    assert ConsentRecord.objects.count() == written


def test_turning_email_off_revokes_the_channel_and_cancels_waiting_marketing(
    browser, ada, topics, make_message
):
    waiting = make_message(customer=ada, to_address="ada@example.com")

    save(browser, path_of(ada), channel_email=False, topic_offers=True)

    assert consent_state(ada, Channel.EMAIL) is False
    # With the channel off, topics are moot: none is written.
    assert not ConsentRecord.objects.exclude(topic="").exists()
    waiting.refresh_from_db()
    assert waiting.status == Message.Status.SUPPRESSED


def test_opting_in_again_lifts_the_customers_own_unsubscribe(browser, ada, make_message):
    message = make_message(customer=ada, to_address="ada@example.com")
    unsubscribe(message=message, now=AT)

    page = browser.get(path_of(message))
    assert boxes(page)["channel_email"] is False
    save(browser, path_of(message), channel_email=True)

    assert consent_state(ada, Channel.EMAIL) is True
    lifted = Suppression.objects.get()
    assert lifted.lifted_at is not None and lifted.lifted_by == "preference centre"


def test_opting_in_never_lifts_a_bounce_or_a_stop(browser, ada):
    suppression_add(channel="email", address="ada@example.com", reason="bounce",
                    source="sendgrid", now=AT)  # fmt: skip
    suppression_add(channel="sms", address="+14155550123", reason="sms_opt_out",
                    source="twilio", now=AT)  # fmt: skip

    page = browser.get(path_of(ada))
    save(browser, path_of(ada), channel_email=True, channel_sms=True)

    html = page.content.decode()
    assert "We cannot send to a***@example.com (bounced)" in html
    assert "You replied STOP" in html
    assert active_suppression("email", "ada@example.com") is not None
    assert active_suppression("sms", "+14155550123") is not None


def test_saving_needs_the_csrf_token(browser, ada):
    response = browser.post(path_of(ada), {"channel_email": "on"})

    assert response.status_code == 403
    assert not ConsentRecord.objects.exists()


def test_a_tampered_link_gets_a_friendly_page(browser, ada):
    path = path_of(ada)

    response = browser.get(path[:-2] + ("xx" if not path.endswith("xx") else "yy"))

    assert response.status_code == 400
    assert "This link does not work" in response.content.decode()


def test_an_unsubscribe_token_is_not_a_preferences_link(browser, make_message):
    token = links.unsubscribe_token(make_message())

    response = browser.get(f"/preferences/{token}")

    assert response.status_code == 400


def test_a_link_works_for_sixty_days_and_expires_after_a_year(browser, ada):
    path = path_of(ada)

    with time_machine.travel(timedelta(days=61)):
        later = browser.get(path)
    with time_machine.travel(timedelta(days=400)):
        expired = browser.get(path)

    assert later.status_code == 200
    assert expired.status_code == 400
    assert "expired" in expired.content.decode()


def test_a_link_for_a_customer_who_is_gone_is_a_404_page(browser, ada):
    path = path_of(ada)
    ada.delete()

    response = browser.get(path)

    assert response.status_code == 404


def test_odd_form_values_and_an_odd_user_agent_never_break_the_page(ada, topics):
    """Boxes are booleans: any value is ticked or not. A NUL in the user agent
    (gunicorn refuses it; another server may not) is left out of the ledger."""
    client = Client(HTTP_USER_AGENT="Odd\x00Browser", REMOTE_ADDR="not an address")
    path = path_of(ada)

    saved = client.post(
        path,
        "channel_email=%00&topic_offers=%ED%A0%80&%FF%00=%zz&channel_sms=" + "x" * 5000,
        content_type="application/x-www-form-urlencoded",
    )
    shown = client.get(path + "?saved=%00&x=%FF")

    assert saved.status_code == 302
    assert shown.status_code == 200
    records = ConsentRecord.objects.all()
    assert records and {(r.user_agent, r.ip_address) for r in records} == {("OddBrowser", None)}
