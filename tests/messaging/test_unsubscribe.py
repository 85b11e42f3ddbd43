"""`/u/<token>`: a GET only asks; the one-click POST (RFC 8058) unsubscribes
at once, with no cookies, and answers 200 without a redirect."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from apps.customers.models import Event
from apps.messaging import links
from apps.messaging.models import Category, Channel, ConsentRecord, Message, Suppression

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture(autouse=True)
def company(settings):
    settings.COMPANY_NAME = "Acme & Co"
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"


@pytest.fixture
def mail_client():
    """What a mailbox provider is: no cookies, no CSRF token, CSRF enforced."""
    return Client(enforce_csrf_checks=True)


def path_of(message: Message) -> str:
    return links.unsubscribe_url(message).removeprefix("https://tenure.example.com")


def one_click(client: Client, path: str):
    return client.post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")


def test_the_link_in_a_message_is_the_https_unsubscribe_page(make_message):
    message = make_message()

    url = links.unsubscribe_url(message)

    assert url.startswith("https://tenure.example.com/u/")
    assert "@" not in url  # ids only, never the address


def test_a_get_shows_the_confirmation_and_changes_nothing(mail_client, make_message):
    message = make_message(to_address="ada@example.com")

    page = mail_client.get(path_of(message))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Unsubscribe a***@example.com?" in html
    assert '<form method="post"' in html and "Acme &amp; Co" in html
    assert "ada@example.com" not in html  # a forwarded link does not show the address
    assert not Suppression.objects.exists()
    assert not ConsentRecord.objects.exists()
    message.refresh_from_db()
    assert message.status == Message.Status.QUEUED


def test_the_one_click_post_unsubscribes_at_once_without_cookies(
    mail_client, make_message, make_customer
):
    customer = make_customer(email="ada@example.com")
    sent = make_message(customer=customer, status=Message.Status.SENT)
    waiting = make_message(customer=customer, status=Message.Status.DEFERRED)
    receipt = make_message(customer=customer, category=Category.TRANSACTIONAL)

    response = one_click(mail_client, path_of(sent))

    assert response.status_code == 200  # no redirect: mailbox providers do not follow one
    assert "You are unsubscribed" in response.content.decode()
    assert "csrftoken" not in response.cookies and "sessionid" not in response.cookies
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "email",
        "ada@example.com",
        "unsubscribe",
    )
    record = ConsentRecord.objects.get()
    assert (record.channel, record.status, record.source) == ("email", "revoked", "unsubscribe")
    assert "(one-click)" in record.wording
    waiting.refresh_from_db()
    receipt.refresh_from_db()
    assert (waiting.status, waiting.reason) == ("suppressed", "cancelled: unsubscribed")
    assert receipt.status == Message.Status.QUEUED  # transactional mail still goes


def test_a_multipart_one_click_post_works_too(mail_client, make_message):
    message = make_message()

    response = mail_client.post(path_of(message), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert "(one-click)" in ConsentRecord.objects.get().wording
    assert Suppression.objects.filter(address=message.to_address, lifted_at=None).exists()


def test_a_head_request_from_a_link_scanner_changes_nothing(mail_client, make_message):
    response = mail_client.head(path_of(make_message()))

    assert response.status_code == 405
    assert not Suppression.objects.exists()


def test_the_confirmation_button_posts_the_same_way(mail_client, make_message):
    message = make_message()

    response = mail_client.post(path_of(message))

    assert response.status_code == 200
    assert Suppression.objects.filter(address=message.to_address, lifted_at=None).exists()


def test_unsubscribing_twice_changes_nothing_more(mail_client, make_message):
    message = make_message()

    first = one_click(mail_client, path_of(message))
    second = one_click(mail_client, path_of(message))

    assert (first.status_code, second.status_code) == (200, 200)
    assert Suppression.objects.count() == 1
    assert ConsentRecord.objects.count() == 1
    assert Event.objects.filter(name="unsubscribed").count() == 1


def test_the_unsubscribe_is_recorded_as_a_customer_event(mail_client, make_message):
    message = make_message()

    one_click(mail_client, path_of(message))

    event = Event.objects.get(name="unsubscribed")
    assert event.customer_id == message.customer_id
    assert event.properties["message_id"] == message.pk
    assert event.properties["channel"] == message.channel
    assert event.properties["via"] == "link"


def test_a_get_records_no_event(mail_client, make_message):
    message = make_message()

    mail_client.get(path_of(message))

    assert not Event.objects.filter(name="unsubscribed").exists()


def test_an_sms_link_unsubscribes_the_number(mail_client, make_message):
    message = make_message(channel=Channel.SMS, to_address="+14155550123")

    page = mail_client.get(path_of(message))
    one_click(mail_client, path_of(message))

    assert "text messages" in page.content.decode()
    assert Suppression.objects.get().address == "+14155550123"


def test_the_link_still_works_sixty_days_later(mail_client, make_message):
    message = make_message()
    path = path_of(message)

    with time_machine.travel(timedelta(days=61)):
        response = one_click(mail_client, path)

    assert response.status_code == 200
    assert Suppression.objects.filter(address=message.to_address).exists()


def test_a_tampered_token_gets_a_friendly_page_and_changes_nothing(mail_client, make_message):
    path = path_of(make_message())
    tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")

    get = mail_client.get(tampered)
    post = one_click(mail_client, tampered)

    assert (get.status_code, post.status_code) == (400, 400)
    assert "This link does not work" in post.content.decode()
    assert "not valid" in post.content.decode()
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    "token",
    [
        "preview", "x", "e30:invalid", "%00", "a" * 300, "eyJtIjoxfQ:bad:sig",
        "%ED%A0%80", "%FF%FE", "%zz", "a%00b:c", "x" * 20_000, "a:b:c:" * 100,
    ],
    ids=lambda t: t[:12],
)  # fmt: skip
@pytest.mark.parametrize("method", ["get", "post"])
def test_malformed_tokens_are_a_400_never_a_500(mail_client, token, method):
    if method == "get":
        response = mail_client.get(f"/u/{token}")
    else:
        response = one_click(mail_client, f"/u/{token}")

    assert response.status_code == 400
    assert not Suppression.objects.exists()


def test_an_odd_user_agent_or_client_address_still_unsubscribes(make_message):
    """gunicorn refuses NUL in headers and sets REMOTE_ADDR from the socket,
    but another server may pass either on: the ledger stores what it can."""
    message = make_message()
    client = Client(HTTP_USER_AGENT="Mail\x00Scanner", REMOTE_ADDR="unix:/run/tenure.sock")

    response = one_click(client, path_of(message))

    assert response.status_code == 200
    record = ConsentRecord.objects.get()
    assert (record.user_agent, record.ip_address) == ("MailScanner", None)
    assert Suppression.objects.filter(address=message.to_address).exists()


def test_a_preferences_token_does_not_unsubscribe(mail_client, make_message):
    message = make_message()
    preferences_token = links.preferences_token(message)

    response = one_click(mail_client, f"/u/{preferences_token}")

    assert response.status_code == 400
    assert not Suppression.objects.exists()


def test_a_link_to_a_message_that_is_gone_is_a_404_page(mail_client, make_message):
    message = make_message()
    path = path_of(message)
    message.delete()

    response = one_click(mail_client, path)

    assert response.status_code == 404
    assert "no longer exists" in response.content.decode()


def test_other_methods_are_refused(mail_client, make_message):
    response = mail_client.put(path_of(make_message()))

    assert response.status_code == 405
    assert not Suppression.objects.exists()


def test_an_oversize_body_is_refused_before_it_is_read(mail_client, make_message, settings):
    settings.API_MAX_BODY_BYTES = 1000

    response = mail_client.post(
        path_of(make_message()), "x" * 2000, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 413
    assert not Suppression.objects.exists()
