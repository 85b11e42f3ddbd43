from datetime import UTC, datetime

import pytest
from django.urls import reverse

from apps.customers.models import ApiKey, Customer, Event
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def customers():
    ingest(
        [
            IdentifyIn(userId="u-1", traits={"email": "ada@example.com", "plan": "pro",
                                              "status": "active"}),
            IdentifyIn(userId="u-2", traits={"email": "bob@example.com", "plan": "starter",
                                              "status": "trialing"}),
            TrackIn(userId="u-1", event="feature_used", properties={"feature": "reports"},
                    timestamp=AT),
        ],
        received_at=AT,
    )  # fmt: skip
    return {c.external_id: c for c in Customer.objects.all()}


def test_customers_are_found_by_exact_email_or_external_id(admin_client, customers):
    url = reverse("admin:customers_customer_changelist")

    by_email = admin_client.get(url, {"q": "ADA@example.com"})
    by_id = admin_client.get(url, {"q": "u-2"})

    assert list(by_email.context["cl"].result_list) == [customers["u-1"]]
    assert list(by_id.context["cl"].result_list) == [customers["u-2"]]


def test_customers_filter_by_plan_and_status(admin_client, customers):
    url = reverse("admin:customers_customer_changelist")

    response = admin_client.get(url)
    pro = admin_client.get(url, {"plan": "pro"})
    trialing = admin_client.get(url, {"status": "trialing"})

    assert b"starter" in response.content  # offered as a filter choice
    assert list(pro.context["cl"].result_list) == [customers["u-1"]]
    assert list(trialing.context["cl"].result_list) == [customers["u-2"]]


def test_the_customer_page_shows_traits_and_the_recent_event_timeline(admin_client, customers):
    response = admin_client.get(
        reverse("admin:customers_customer_change", args=[customers["u-1"].pk])
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "feature_used" in html
    assert "2026-11-01 09:30" in html
    assert "&quot;feature&quot;: &quot;reports&quot;" in html
    assert "&quot;plan&quot;: &quot;pro&quot;" in html


def test_editing_a_contact_column_in_the_admin_updates_the_trait_too(admin_client, customers):
    customer = customers["u-1"]
    url = reverse("admin:customers_customer_change", args=[customer.pk])

    response = admin_client.post(
        url,
        {
            "external_id": "u-1",
            "email": "ada.l@example.com",
            "phone": "",
            "timezone": "Europe/London",
            "locale": "",
            "traits": '{"email": "ada@example.com", "plan": "pro"}',
            "event_stats-TOTAL_FORMS": "1",
            "event_stats-INITIAL_FORMS": "1",
            "event_stats-MIN_NUM_FORMS": "0",
            "event_stats-MAX_NUM_FORMS": "1000",
            "event_stats-0-id": str(customer.event_stats.get().pk),
            "event_stats-0-customer": str(customer.pk),
        },
    )

    assert response.status_code == 302, response.content
    customer.refresh_from_db()
    assert customer.email == "ada.l@example.com"
    assert customer.traits["email"] == "ada.l@example.com"
    assert customer.traits["timezone"] == "Europe/London"


def test_an_invalid_phone_is_refused_by_the_admin_form(admin_client, customers):
    customer = customers["u-2"]
    response = admin_client.post(
        reverse("admin:customers_customer_change", args=[customer.pk]),
        {"external_id": "u-2", "phone": "555-1234", "traits": "{}",
         "event_stats-TOTAL_FORMS": "0", "event_stats-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "is not an E.164 phone number" in response.content.decode()


def test_events_are_read_only_in_the_admin(admin_client, customers):
    event = Event.objects.get()

    listing = admin_client.get(reverse("admin:customers_event_changelist"))
    add = admin_client.get(reverse("admin:customers_event_add"))
    delete = admin_client.post(reverse("admin:customers_event_delete", args=[event.pk]))

    assert listing.status_code == 200
    assert b"feature_used" in listing.content
    assert add.status_code == 403
    assert delete.status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


def test_an_api_key_added_in_the_admin_is_shown_once_and_works(admin_client, client):
    response = admin_client.post(
        reverse("admin:customers_apikey_add"), {"name": "crm-sync"}, follow=True
    )

    shown = [str(m) for m in response.context["messages"] if "shown once" in str(m)]
    key = shown[0].rsplit(" ", 1)[-1]
    record = ApiKey.objects.get(name="crm-sync")
    assert record.key_hash == ApiKey.hash(key)
    ok = client.post(
        "/api/v1/track",
        {"userId": "u-1", "event": "x"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert ok.status_code == 200


def test_revoking_a_key_in_the_admin_locks_it_out(admin_client, client, api_key):
    record, key = api_key

    admin_client.post(
        reverse("admin:customers_apikey_changelist"),
        {"action": "revoke", "_selected_action": [record.pk]},
    )

    record.refresh_from_db()
    assert record.revoked_at is not None
    response = client.post(
        "/api/v1/track", {"userId": "u-1", "event": "x"},
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}",
    )  # fmt: skip
    assert response.status_code == 401


def test_events_are_found_by_customer_name_or_message_id(admin_client, customers):
    ingest([TrackIn(userId="u-2", event="login", messageId="m-77", timestamp=AT)], received_at=AT)
    url = reverse("admin:customers_event_changelist")

    def found(term):
        return sorted(e.name for e in admin_client.get(url, {"q": term}).context["cl"].result_list)

    assert found("u-2") == ["login"]
    assert found("feature_used") == ["feature_used"]
    assert found("m-77") == ["login"]
    assert found("nothing") == []


def test_the_admin_links_to_the_api_docs_and_health(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert b'href="/api/v1/docs"' in response.content
    assert b'href="/healthz"' in response.content
    assert admin_client.get("/api/v1/docs").status_code == 200


def test_the_apps_above_add_to_the_customer_page_through_its_registry(rf, admin_user, customers):
    """Segments, journeys and analytics fill `customer_page`; none replaces the
    customers app's own admin. Inlines show in INSTALLED_APPS order."""
    from django.contrib import admin

    from apps.analytics.customer360 import customer_360_section
    from apps.customers.admin import CustomerAdmin, customer_page

    model_admin = admin.site.get_model_admin(Customer)
    request = rf.get("/")
    request.user = admin_user

    assert type(model_admin) is CustomerAdmin
    assert [i.__name__ for i in model_admin.get_inlines(request, customers["u-1"])] == [
        "EventStatInline",
        "SegmentHistoryInline",
        "JourneyTimelineInline",
    ]
    assert customer_page.sections == [customer_360_section]
