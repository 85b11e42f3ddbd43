from datetime import timedelta

import pytest
import time_machine

from apps.messaging.models import Message
from apps.tracking.models import Engagement
from apps.tracking.services.hits import tracked_links_store
from apps.tracking.tokens import click_token, open_token
from apps.tracking.views import PIXEL_GIF

from .conftest import T0, events_named, wsgi_call

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko)"
LATER = T0 + timedelta(minutes=5)


@pytest.fixture(params=["django", "fast path"])
def get(request, client):
    """GET (or HEAD) a path through Django's test client, or through the WSGI
    application gunicorn serves, whose fast path answers the pixel and the
    redirect (apps/tracking/wsgi.py): every test of this module runs both."""

    def send(path: str, *, method: str, agent: str, at):
        with time_machine.travel(at, tick=False):
            if request.param == "django":
                return getattr(client, method)(path, HTTP_USER_AGENT=agent)
            return wsgi_call(None, method, path, HTTP_USER_AGENT=agent)

    return send


@pytest.fixture
def pixel(get):
    def hit(token: str, *, method: str = "get", agent: str = BROWSER, at=LATER):
        return get(f"/t/o/{token}", method=method, agent=agent, at=at)

    return hit


@pytest.fixture
def click(get):
    def hit(token: str, *, method: str = "get", agent: str = BROWSER, at=LATER):
        return get(f"/t/c/{token}", method=method, agent=agent, at=at)

    return hit


@pytest.fixture
def linked(make_message):
    message = make_message(delivered_at=T0, status=Message.Status.DELIVERED)
    tracked_links_store(
        message_id=message.pk, urls=["https://example.com/pricing", "https://example.com/docs"]
    )
    return message


def assert_is_the_pixel(response):
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response["Cache-Control"] == "no-store"
    assert response.content == PIXEL_GIF
    assert len(PIXEL_GIF) == 43


# --- the pixel ----------------------------------------------------------------


def test_the_pixel_answers_a_no_store_gif_and_records_one_pending_open(pixel, make_message):
    message = make_message()

    assert_is_the_pixel(pixel(open_token(message.pk)))

    (hit,) = Engagement.objects.all()
    assert (hit.message_id, hit.kind, hit.source) == (message.pk, "open", "pixel")
    assert hit.occurred_at == LATER
    assert hit.processed_at is None and not hit.machine


@pytest.mark.parametrize(
    "token",
    ["nonsense", "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "tampered"],
)
def test_the_pixel_answers_the_same_gif_for_any_bad_token_and_records_nothing(
    pixel, make_message, token
):
    message = make_message()
    if token == "tampered":
        token = open_token(message.pk).replace(f"{message.pk}:", f"{message.pk + 1}:")

    assert_is_the_pixel(pixel(token))
    assert not Engagement.objects.exists()


def test_a_click_token_is_no_open_token(pixel, linked):
    assert_is_the_pixel(pixel(click_token(linked.pk, 0)))
    assert not Engagement.objects.exists()


def test_a_signed_token_of_a_deleted_message_still_gets_the_gif(pixel, make_message):
    message = make_message()
    token = open_token(message.pk)
    message.delete()

    assert_is_the_pixel(pixel(token))
    assert not Engagement.objects.exists()


def test_a_human_open_moves_the_message_and_records_email_opened_once(pixel, make_message, process):
    message = make_message(delivered_at=T0, status=Message.Status.DELIVERED)
    token = open_token(message.pk)

    pixel(token)
    pixel(token, at=LATER + timedelta(hours=1))
    result = process()

    message.refresh_from_db()
    assert message.status == Message.Status.OPENED
    assert message.opened_at == LATER
    (event,) = events_named("email_opened")
    assert event.customer_id == message.customer_id
    assert event.occurred_at == LATER
    assert event.message_id == f"msg:{message.pk}:opened"
    assert event.properties == {
        "message_id": message.pk,
        "channel": "email",
        "journey": "onboarding",
        "node_id": "welcome",
        "template": "welcome",
        "source": "pixel",
    }
    assert Engagement.objects.filter(processed_at__isnull=False, machine=False).count() == 2
    assert (result.hits, result.machine, result.events_recorded) == (2, 0, 1)


def test_processing_twice_changes_nothing_more(pixel, make_message, process):
    message = make_message()
    pixel(open_token(message.pk))

    process()
    again = process()

    assert (again.hits, again.events_recorded) == (0, 0)
    assert len(events_named("email_opened")) == 1


@pytest.mark.parametrize(
    ("method", "agent", "reason"),
    [
        ("head", BROWSER, "HEAD request"),
        ("get", "Mozilla/5.0 (compatible; Barracuda Sentinel)", "scanner user agent (barracuda)"),
        ("get", "python-requests/2.31", "scanner user agent (python-requests)"),
        ("get", "", "no user agent"),
    ],
)
def test_machine_opens_are_flagged_and_never_move_the_message_or_make_events(
    pixel, make_message, process, method, agent, reason
):
    message = make_message(delivered_at=T0, status=Message.Status.DELIVERED)

    response = pixel(open_token(message.pk), method=method, agent=agent)
    process()

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert message.opened_at is None
    assert not events_named("email_opened")
    (hit,) = Engagement.objects.all()
    assert hit.machine and hit.machine_reason == reason
    assert hit.processed_at is not None


def test_test_sends_are_tracked_but_record_no_customer_event(pixel, make_message, process):
    message = make_message(is_test=True)

    pixel(open_token(message.pk))
    process()

    message.refresh_from_db()
    assert message.status == Message.Status.OPENED
    assert not events_named("email_opened")


# --- the redirect -------------------------------------------------------------


def test_a_click_redirects_to_the_stored_url_only(click, linked):
    response = click(click_token(linked.pk, 1))

    assert response.status_code == 302
    assert response["Location"] == "https://example.com/docs"
    assert response["Cache-Control"] == "no-store"
    (hit,) = Engagement.objects.all()
    assert (hit.kind, hit.source, hit.url, hit.link.position) == (
        "click",
        "redirect",
        "https://example.com/docs",
        1,
    )


@pytest.mark.parametrize("case", ["tampered", "foreign salt", "unknown position", "garbage"])
def test_bad_click_tokens_get_our_page_and_never_an_external_redirect(click, linked, case):
    token = {
        "tampered": click_token(linked.pk, 0).replace(f"{linked.pk}.0", f"{linked.pk}.1"),
        "foreign salt": open_token(linked.pk),
        "unknown position": click_token(linked.pk, 7),
        "garbage": "evil.example:https",
    }[case]

    response = click(token)

    assert response.status_code == 404
    assert "Location" not in response
    assert b"This link does not work" in response.content
    assert not Engagement.objects.exists()


def test_a_human_click_moves_the_message_and_records_email_clicked(click, linked, process):
    clicked_at = T0 + timedelta(minutes=30)
    click(click_token(linked.pk, 0), at=clicked_at)
    click(click_token(linked.pk, 0), at=clicked_at + timedelta(minutes=1))
    click(click_token(linked.pk, 1), at=clicked_at + timedelta(minutes=2))

    process()

    linked.refresh_from_db()
    assert linked.status == Message.Status.CLICKED
    assert linked.clicked_at == clicked_at
    assert linked.opened_at == clicked_at  # a click is an open too
    clicks = events_named("email_clicked")
    assert [e.properties["url"] for e in clicks] == [
        "https://example.com/pricing",
        "https://example.com/docs",
    ]
    assert clicks[0].properties["journey"] == "onboarding"


def test_a_click_seconds_after_delivery_is_a_scanner(click, linked, process):
    click(click_token(linked.pk, 0), at=T0 + timedelta(seconds=3))

    process()

    (hit,) = Engagement.objects.all()
    assert hit.machine
    assert hit.machine_reason.startswith("clicked 3s after delivery")
    linked.refresh_from_db()
    assert linked.status == Message.Status.DELIVERED
    assert not events_named("email_clicked")


def test_a_click_seconds_after_sending_is_a_scanner_when_delivery_is_not_known_yet(
    click, make_message, process
):
    message = make_message()  # sent at T0, no delivery report yet
    tracked_links_store(message_id=message.pk, urls=["https://example.com/"])

    click(click_token(message.pk, 0), at=T0 + timedelta(seconds=1))
    process()

    assert Engagement.objects.get().machine
    assert not events_named("email_clicked")


def test_a_head_request_is_a_machine_click_that_is_never_counted(click, linked, process):
    response = click(click_token(linked.pk, 0), method="head", at=T0 + timedelta(hours=2))
    process()

    assert response.status_code == 302
    hit = Engagement.objects.get()
    assert hit.machine and hit.machine_reason == "HEAD request"
    linked.refresh_from_db()
    assert linked.clicked_at is None
    assert not events_named("email_clicked")


def test_a_scanner_agent_click_is_flagged(click, linked, process):
    click(click_token(linked.pk, 0), agent="Mimecast URL protect", at=T0 + timedelta(hours=2))
    process()

    assert Engagement.objects.get().machine_reason == "scanner user agent (mimecast)"
    assert not events_named("email_clicked")


def test_other_methods_are_not_allowed(client, linked):
    assert client.post(f"/t/c/{click_token(linked.pk, 0)}").status_code == 405
    assert client.post(f"/t/o/{open_token(linked.pk)}").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_hit_is_written_and_committed_in_one_round_trip(
    make_message, django_assert_num_queries
):
    from django.db import connection

    from apps.tracking.services.hits import click_record, open_record

    message = make_message()
    tracked_links_store(message_id=message.pk, urls=["https://example.com/a"])
    connection.ensure_connection()
    assert not connection.in_atomic_block
    with connection.cursor() as cursor:
        # The session's own value (the tests' embedded server runs with it off).
        cursor.execute("SET synchronous_commit = on")

    with django_assert_num_queries(1):
        url = click_record(
            message_id=message.pk, position=0, now=LATER, method="GET", user_agent=BROWSER
        )
    with django_assert_num_queries(1):
        opened = open_record(message_id=message.pk, now=LATER, method="GET", user_agent=BROWSER)
    missing = open_record(message_id=message.pk + 1000, now=LATER, method="GET", user_agent=BROWSER)

    assert url == "https://example.com/a"
    assert (opened, missing) == (True, False)
    assert sorted(Engagement.objects.values_list("kind", flat=True)) == ["click", "open"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)  # the setting was local to the hit's transaction
