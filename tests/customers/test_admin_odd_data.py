"""Stored data that an older version let in (or a hand-written row) never takes
an admin page down: deep nesting, huge values, times past what Python reads."""

import json
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.urls import reverse

from apps.customers.models import Customer, Event

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


def nested(depth: int, leaf="bottom"):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def write_raw(customer_traits: object, event_properties: object) -> tuple[Customer, Event]:
    """A customer and an event written as an older version could have, past
    today's validation (raw SQL: the ORM's own json.dumps is not the point)."""
    customer = Customer.objects.create(external_id="odd", email="odd@example.com")
    event = Event.objects.create(customer=customer, name="odd", occurred_at=AT, received_at=AT)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE customers_customer SET traits = %s::jsonb WHERE id = %s",
            [json.dumps(customer_traits), customer.pk],
        )
        cursor.execute(
            "UPDATE customers_event SET properties = %s::jsonb WHERE id = %s",
            [json.dumps(event_properties), event.pk],
        )
    return customer, event


ODD_VALUES = {
    "nested 900 levels": nested(900),
    "a huge text": "x" * 2_000_000,
    "a long list": list(range(200_000)),
}


@pytest.fixture(params=list(ODD_VALUES), ids=list(ODD_VALUES))
def odd(request):
    value = ODD_VALUES[request.param]
    return write_raw({"plan": "pro", "deep": value}, {"deep": value})


def test_the_customer_pages_show_odd_stored_traits_cut_short(admin_client, odd):
    customer, _ = odd

    listing = admin_client.get(reverse("admin:customers_customer_changelist"))
    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))

    assert listing.status_code == 200
    assert page.status_code == 200
    html = page.content.decode()
    assert "…" in html  # the display is cut, and says so
    assert len(html) < 1_500_000


def test_the_event_pages_show_odd_stored_properties_cut_short(admin_client, odd):
    _, event = odd

    listing = admin_client.get(reverse("admin:customers_event_changelist"))
    page = admin_client.get(reverse("admin:customers_event_change", args=[event.pk]))

    assert listing.status_code == 200
    assert page.status_code == 200
    assert "…" in page.content.decode()


def test_times_past_what_python_reads_are_shown_at_the_edge(admin_client):
    customer, event = write_raw({}, {})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE customers_customer SET last_seen_at = '9999-12-31T23:59:59-14:00' "
            "WHERE id = %s",
            [customer.pk],
        )
        cursor.execute(
            "UPDATE customers_event SET occurred_at = '0001-01-01T00:00:00+14:00' WHERE id = %s",
            [event.pk],
        )

    pages = [
        reverse("admin:customers_customer_changelist"),
        reverse("admin:customers_customer_change", args=[customer.pk]),
        reverse("admin:customers_event_changelist"),
        reverse("admin:customers_event_change", args=[event.pk]),
    ]

    assert [admin_client.get(url).status_code for url in pages] == [200] * 4
    customer.refresh_from_db()
    event.refresh_from_db()
    assert customer.last_seen_at == datetime(9999, 12, 30, tzinfo=UTC)
    assert event.occurred_at == datetime(1, 1, 2, tzinfo=UTC)


def test_a_customer_with_odd_traits_can_still_be_edited_and_keeps_them(admin_client, odd):
    customer, _ = odd
    stored = Customer.objects.get(pk=customer.pk).traits

    response = admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {"external_id": "odd", "email": "new@example.com", "phone": "", "timezone": "",
         "locale": "", "event_stats-TOTAL_FORMS": "0", "event_stats-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 302, response.content[:2000]
    customer.refresh_from_db()
    assert customer.email == "new@example.com"
    assert customer.traits == {**stored, "email": "new@example.com"}


@pytest.mark.parametrize("traits", [["a", "list"], "text", 7, None])
def test_traits_stored_as_something_else_than_an_object_are_shown(admin_client, traits):
    customer, _ = write_raw(traits, {})

    listing = admin_client.get(reverse("admin:customers_customer_changelist"))
    page = admin_client.get(reverse("admin:customers_customer_change", args=[customer.pk]))

    assert (listing.status_code, page.status_code) == (200, 200)


def test_the_admin_form_refuses_traits_that_are_not_an_object(admin_client):
    customer = Customer.objects.create(external_id="u-1")

    response = admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {"external_id": "u-1", "traits": '["a"]',
         "event_stats-TOTAL_FORMS": "0", "event_stats-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "must be a JSON object" in response.content.decode()
    customer.refresh_from_db()
    assert customer.traits == {}


def test_a_last_seen_time_far_ahead_is_repaired_to_the_last_write():
    from importlib import import_module

    from django.apps import apps

    repair = import_module("apps.customers.migrations.0005_last_seen_never_ahead").repair
    far = Customer.objects.create(external_id="far", last_seen_at=datetime(9999, 1, 1, tzinfo=UTC))
    near = Customer.objects.create(external_id="near", last_seen_at=AT)

    repair(apps, None)

    far.refresh_from_db()
    near.refresh_from_db()
    assert far.last_seen_at == far.updated_at
    assert near.last_seen_at == AT


def test_a_huge_plan_is_cut_short_in_the_list_and_left_out_of_the_filter(admin_client):
    Customer.objects.create(external_id="big", traits={"plan": "x" * 1_000_000})
    Customer.objects.create(external_id="small", traits={"plan": "pro"})

    listing = admin_client.get(reverse("admin:customers_customer_changelist"))

    assert listing.status_code == 200
    assert len(listing.content) < 200_000
    assert "?plan=pro" in listing.content.decode()
