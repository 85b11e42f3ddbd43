"""The admin with anonymous visitors, merged profiles and accounts: known
customers listed by default, a Profile filter for the others, the account
pages, and no page taken down by a profile without an external id."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib import admin
from django.urls import reverse

from apps.customers.models import Account, Customer
from apps.customers.schemas import AliasIn, GroupIn, IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments.models import Segment
from apps.segments.services import segment_refresh

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
LIST = "admin:customers_customer_changelist"


@pytest.fixture
def people():
    """ann and bo, known; a visitor never identified (with an event and an
    account); old-ann, a profile merged into ann by an alias; a visitor who
    signed up as bo (merged into bo)."""
    ingest(
        [
            IdentifyIn(userId="ann", traits={"email": "ann@example.com", "plan": "pro"}),
            IdentifyIn(userId="old-ann", traits={"plan": "pro"}),
            TrackIn(userId="old-ann", event="login"),
            TrackIn(anonymousId="visitor-1", event="pricing_viewed"),
            GroupIn(anonymousId="visitor-1", groupId="acme", traits={"name": "Acme"}),
            TrackIn(anonymousId="visitor-2", event="pricing_viewed"),
            IdentifyIn(userId="bo", traits={"email": "bo@example.com"}),
            GroupIn(userId="ann", groupId="acme", traits={"plan": "enterprise", "seats": 40}),
            GroupIn(userId="bo", groupId="beta", traits={"name": "Beta Ltd"}),
        ],
        received_at=AT,
    )
    segment = Segment.objects.create(
        slug="pro", name="Pro", definition={"trait": "plan", "op": "eq", "value": "pro"}
    )
    segment_refresh(segment, now=AT)  # old-ann is a member until merged
    later = AT + timedelta(minutes=1)
    ingest(
        [
            AliasIn(previousId="old-ann", userId="ann"),
            IdentifyIn(userId="bo", anonymousId="visitor-2"),
        ],
        received_at=later,
    )
    segment_refresh(segment, now=later + timedelta(minutes=1))
    by = {str(c): c for c in Customer.objects.all()}
    return {
        "ann": by["ann"],
        "bo": by["bo"],
        "old-ann": by["old-ann"],
        "visitor": by["anonymous visitor-1"],
        "visitor-2": by["anonymous visitor-2"],
    }


def listed(client, **params) -> set[str]:
    response = client.get(reverse(LIST), params)
    assert response.status_code == 200
    return {str(c) for c in response.context["cl"].result_list}


def test_the_customer_list_shows_known_customers_by_default(admin_client, people):
    assert listed(admin_client) == {"ann", "bo"}
    assert listed(admin_client, profile="anonymous") == {"anonymous visitor-1"}
    assert listed(admin_client, profile="merged") == {"old-ann", "anonymous visitor-2"}
    assert len(listed(admin_client, profile="all")) == 5


def test_the_profile_filter_offers_known_customers_first(admin_client, people):
    html = admin_client.get(reverse(LIST)).content.decode()

    assert "Known customers" in html and "Anonymous visitors" in html
    assert "Merged into another" in html and "All profiles" in html


def test_a_visitor_is_found_by_anonymous_id_among_all_profiles(admin_client, people):
    assert listed(admin_client, q="visitor-1") == set()
    assert listed(admin_client, q="visitor-1", profile="all") == {"anonymous visitor-1"}
    # A visitor who signed up is found by that id as the customer it became.
    assert listed(admin_client, q="visitor-2") == {"bo"}


def test_an_anonymous_visitors_page_shows_its_anonymous_id(admin_client, people):
    visitor = people["visitor"]

    response = admin_client.get(reverse("admin:customers_customer_change", args=[visitor.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "visitor-1" in html
    assert "Anonymous visitor: receives no messages" in html
    assert "pricing_viewed" in html
    acme = Account.objects.get(external_id="acme")
    assert reverse("admin:customers_account_change", args=[acme.pk]) in html


def test_a_merged_profiles_page_links_to_the_customer_it_became(admin_client, people):
    old, ann = people["old-ann"], people["ann"]

    response = admin_client.get(reverse("admin:customers_customer_change", args=[old.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Merged into" in html
    assert reverse("admin:customers_customer_change", args=[ann.pk]) in html


def test_the_customer_page_lists_its_accounts_and_the_identities_merged_into_it(
    admin_client, people
):
    ann, bo = people["ann"], people["bo"]
    acme = Account.objects.get(external_id="acme")

    ann_page = admin_client.get(reverse("admin:customers_customer_change", args=[ann.pk]))
    bo_page = admin_client.get(reverse("admin:customers_customer_change", args=[bo.pk]))

    html = ann_page.content.decode()
    assert 'data-testid="c360-accounts"' in html
    assert reverse("admin:customers_account_change", args=[acme.pk]) in html
    assert "enterprise" in html
    assert 'data-testid="c360-identities"' in html
    assert "<code>old-ann</code>" in html
    bo_html = bo_page.content.decode()
    assert "<code>visitor-2</code>" in bo_html
    assert "Beta Ltd" in bo_html


def test_identity_fields_are_read_only_once_a_customer_exists(admin_client, people):
    ann = people["ann"]
    url = reverse("admin:customers_customer_change", args=[ann.pk])

    response = admin_client.post(
        url,
        {"external_id": "", "email": "ann@example.com", "phone": "", "timezone": "",
         "locale": "", "traits": '{"plan": "pro"}',
         "event_stats-TOTAL_FORMS": "0", "event_stats-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 302
    ann.refresh_from_db()
    assert ann.external_id == "ann"


def test_a_customer_added_by_hand_needs_an_external_id(admin_client, db):
    response = admin_client.post(
        reverse("admin:customers_customer_add"),
        {"external_id": "", "email": "", "phone": "", "timezone": "", "locale": "",
         "traits": "{}", "event_stats-TOTAL_FORMS": "0", "event_stats-INITIAL_FORMS": "0"},
    )  # fmt: skip

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["external_id"]
    assert not Customer.objects.exists()


# --- accounts --------------------------------------------------------------------------


def test_accounts_are_found_by_group_id_name_or_a_members_external_id(admin_client, people):
    url = reverse("admin:customers_account_changelist")

    def found(term: str) -> set[str]:
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return {a.external_id for a in response.context["cl"].result_list}

    assert found("") == {"acme", "beta"}
    assert found("acme") == {"acme"}
    assert found("beta ltd") == {"beta"}
    assert found("bo") == {"beta"}
    assert found("nobody") == set()


def test_the_account_page_shows_its_traits_and_people(admin_client, people):
    acme = Account.objects.get(external_id="acme")

    response = admin_client.get(reverse("admin:customers_account_change", args=[acme.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "&quot;seats&quot;: 40" in html
    assert 'data-testid="account-members"' in html
    for who in (people["ann"], people["visitor"]):
        assert reverse("admin:customers_customer_change", args=[who.pk]) in html
    assert "anonymous visitor-1" in html


def test_the_account_lists_members_link_to_its_people(admin_client, people):
    acme = Account.objects.get(external_id="acme")

    assert listed(admin_client, account=str(acme.pk), profile="all") == {
        "ann",
        "anonymous visitor-1",
    }
    assert listed(admin_client, account=str(acme.pk)) == {"ann"}
    assert listed(admin_client, account="nope") == set()


def test_accounts_are_not_edited_by_hand(admin_client, people):
    acme = Account.objects.get(external_id="acme")

    add = admin_client.get(reverse("admin:customers_account_add"))
    change = admin_client.post(
        reverse("admin:customers_account_change", args=[acme.pk]), {"name": "Renamed"}
    )

    assert add.status_code == 403
    assert change.status_code == 403
    acme.refresh_from_db()
    assert acme.name == "Acme"


def test_deleting_an_account_stamps_its_members_for_the_next_refresh(admin_client, people):
    acme = Account.objects.get(external_id="acme")
    # One transaction's stamps are all alike: clear them to see the delete's.
    Customer.objects.update(touched_seq=None)

    response = admin_client.post(
        reverse("admin:customers_account_delete", args=[acme.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Account.objects.filter(pk=acme.pk).exists()
    stamped = Customer.objects.filter(touched_seq__isnull=False)
    assert {str(c) for c in stamped} == {"ann", "anonymous visitor-1"}


# --- every page survives profiles without an external id -------------------------------


def test_every_admin_list_renders_with_anonymous_and_merged_profiles(admin_client, people):
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = admin_client.get(url)
        assert response.status_code == 200, url
        if model_admin.search_fields:
            for term in ("visitor-1", "old-ann"):
                assert admin_client.get(url, {"q": term}).status_code == 200, (url, term)


def test_every_profiles_page_renders(admin_client, people):
    for who in people.values():
        response = admin_client.get(reverse("admin:customers_customer_change", args=[who.pk]))
        assert response.status_code == 200, who
    for event in people["visitor"].events.all():
        url = reverse("admin:customers_event_change", args=[event.pk])
        assert admin_client.get(url).status_code == 200
