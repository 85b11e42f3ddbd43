"""The message page shows what came back for the message: its engagement
(opens, clicks, delivery reports; machine hits with their reason, the URL of
each click) and the provider's webhook events, as tracking adds them to
messaging's outbox."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.core.roles import VIEWER, roles_ensure
from apps.messaging.models import Message
from apps.tracking.models import Engagement
from apps.tracking.services.hits import tracked_links_store
from apps.tracking.tokens import click_token, open_token

from .conftest import T0, sg_event

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko)"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cheap_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def hit(client):
    """hit("o" or "c", token, at=..., agent=...): the customer's (or a scanner's) request."""

    def get(kind: str, token: str, *, at, agent: str = BROWSER):
        with time_machine.travel(at, tick=False):
            return client.get(f"/t/{kind}/{token}", HTTP_USER_AGENT=agent)

    return get


@pytest.fixture
def linked(make_message):
    message = make_message()
    tracked_links_store(
        message_id=message.pk, urls=["https://example.com/pricing", "https://example.com/docs"]
    )
    return message


def page_of(client: Client, message: Message) -> str:
    response = client.get(reverse("admin:messaging_message_change", args=[message.pk]))
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, group_id: str) -> str:
    found = re.search(rf'<div class="inline-group" id="{group_id}">(.*?)</fieldset>', html, re.S)
    assert found, f"no {group_id} section on the page"
    return found.group(1)


def rows(html: str) -> list[str]:
    """The table rows of a section, as text with tags removed and spaces squeezed."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        " ".join(re.sub(r"<[^>]+>", " ", row).split())
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_a_message_page_lists_its_engagement_oldest_first_with_machine_flags_and_urls(
    admin_client, linked, hit, post_sendgrid, process
):
    post_sendgrid([sg_event("delivered", linked)])  # at T0 + 1 minute
    hit("o", open_token(linked.pk), at=T0 + timedelta(minutes=30))
    scanner = "Mimecast URL protect"
    hit("c", click_token(linked.pk, 0), at=T0 + timedelta(minutes=40), agent=scanner)
    hit("c", click_token(linked.pk, 1), at=T0 + timedelta(hours=2))
    process()

    engagement = section(page_of(admin_client, linked), "message-engagements-group")

    assert rows(engagement) == [
        "2026-03-02 15:01:00 Delivered SendGrid person 2026-03-02 16:00:00",
        "2026-03-02 15:30:00 Opened Open pixel person 2026-03-02 16:00:00",
        "2026-03-02 15:40:00 Clicked Click redirect machine : scanner user agent (mimecast) "
        "https://example.com/pricing 2026-03-02 16:00:00",
        "2026-03-02 17:00:00 Clicked Click redirect person https://example.com/docs "
        "2026-03-02 16:00:00",
    ]
    first = Engagement.objects.order_by("occurred_at").first()
    assert reverse("admin:tracking_engagement_change", args=[first.pk]) in engagement


def test_engagement_not_processed_yet_is_listed_as_such(admin_client, linked, hit):
    hit("o", open_token(linked.pk), at=T0 + timedelta(minutes=30))

    (row,) = rows(section(page_of(admin_client, linked), "message-engagements-group"))

    assert row == "2026-03-02 15:30:00 Opened Open pixel person not yet"


def test_a_message_page_lists_the_providers_events_as_received(
    admin_client, linked, post_sendgrid, process
):
    later = int((T0 + timedelta(hours=3)).timestamp())
    post_sendgrid([sg_event("open", linked, timestamp=later), sg_event("delivered", linked)])
    process()

    events = section(page_of(admin_client, linked), "message-provider-events-group")

    listed = rows(events)
    assert [row.split()[:4] for row in listed] == [
        ["2026-03-02", "15:01:00", "SendGrid", "delivered"],
        ["2026-03-02", "18:00:00", "SendGrid", "open"],
    ]
    assert all(row.endswith("2026-03-02 16:00:00") for row in listed)  # processed then
    assert reverse("admin:tracking_providerevent_changelist") in events


def test_a_message_nothing_came_back_for_says_so(admin_client, linked):
    html = page_of(admin_client, linked)

    assert rows(section(html, "message-engagements-group")) == [
        "No opens, clicks or delivery reports yet."
    ]
    assert rows(section(html, "message-provider-events-group")) == [
        "No webhook events from the provider for this message."
    ]


def test_a_long_history_shows_its_first_rows_and_links_to_all_of_them(admin_client, linked):
    Engagement.objects.bulk_create(
        Engagement(
            message=linked,
            kind=Engagement.Kind.OPEN,
            source=Engagement.Source.PIXEL,
            occurred_at=T0 + timedelta(minutes=n),
            created_at=T0 + timedelta(minutes=n),
        )
        for n in range(1, 103)
    )

    engagement = section(page_of(admin_client, linked), "message-engagements-group")

    assert len(rows(engagement)) == 100
    assert rows(engagement)[0].startswith("2026-03-02 15:01:00 Opened")
    assert "The first 100 of 102 shown" in engagement
    everything = reverse("admin:tracking_engagement_changelist") + (
        f"?message__id__exact={linked.pk}"
    )
    assert everything in engagement
    listed = admin_client.get(everything)
    assert listed.status_code == 200 and "102 engagements" in listed.content.decode()


def test_the_page_costs_the_same_queries_whatever_the_number_of_engagements(
    admin_client, linked, make_message
):
    other = make_message()
    for message, count in ((linked, 2), (other, 60)):
        Engagement.objects.bulk_create(
            Engagement(
                message=message,
                kind=Engagement.Kind.CLICK,
                source=Engagement.Source.REDIRECT,
                occurred_at=T0 + timedelta(minutes=n),
                created_at=T0 + timedelta(minutes=n),
                url="https://example.com/pricing",
            )
            for n in range(count)
        )
    url = reverse("admin:messaging_message_change", args=[linked.pk])
    admin_client.get(url)  # the session and the content types, cached

    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(reverse("admin:messaging_message_change", args=[other.pk]))

    assert len(many.captured_queries) == len(few.captured_queries)


def test_a_viewer_sees_the_engagement_and_a_user_without_tracking_rights_does_not(linked, hit):
    hit("o", open_token(linked.pk), at=T0 + timedelta(minutes=30))
    viewer = User.objects.create_user("vera", password="pw", is_staff=True)
    roles_ensure(django_apps)  # a browser test's flush may have removed the migration's groups
    viewer.groups.add(Group.objects.get(name=VIEWER))
    outbox_only = User.objects.create_user("otto", password="pw", is_staff=True)
    outbox_only.user_permissions.add(Permission.objects.get(codename="view_message"))
    as_viewer, as_outbox_only = Client(), Client()
    as_viewer.force_login(viewer)
    as_outbox_only.force_login(outbox_only)

    seen = page_of(as_viewer, linked)
    unseen = page_of(as_outbox_only, linked)

    assert rows(section(seen, "message-engagements-group")) == [
        "2026-03-02 15:30:00 Opened Open pixel person not yet"
    ]
    assert "message-engagements-group" not in unseen
    assert "message-provider-events-group" not in unseen
