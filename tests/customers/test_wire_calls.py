"""Segment's other call types on their own paths (issue 17): page, screen,
group and alias, sent as a Segment SDK sends them (Basic auth, gzip), and in
a batch; a refused call names its field."""

import base64
import gzip
import json

import pytest
from django.apps import apps

from apps.customers.models import Customer, Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(client, api_key):
    authorization = "Basic " + base64.b64encode(f"{api_key[1]}:".encode()).decode()

    def post(endpoint, body):
        return client.post(
            f"/api/v1/{endpoint}",
            data=gzip.compress(json.dumps(body).encode()),
            content_type="application/json",
            headers={"Authorization": authorization, "Content-Encoding": "gzip"},
        )

    return post


def test_page_is_stored_as_a_page_viewed_event(send):
    response = send(
        "page",
        {
            "userId": "u-1",
            "name": "Pricing",
            "category": "Docs",
            "properties": {"path": "/pricing", "url": "https://example.com/pricing"},
        },
    )

    assert (response.status_code, response.json()) == (200, {"success": True})
    event = Event.objects.get()
    assert (event.customer.external_id, event.name) == ("u-1", "page_viewed")
    assert event.properties["path"] == "/pricing"
    assert "Pricing" in event.properties.values()


def test_screen_is_stored_as_a_screen_viewed_event(send):
    response = send("screen", {"userId": "u-1", "name": "Home"})

    assert (response.status_code, response.json()) == (200, {"success": True})
    assert Event.objects.get().name == "screen_viewed"


def test_group_stores_the_account_and_the_membership(send):
    body = {"userId": "u-1", "groupId": "acme", "traits": {"name": "Acme", "plan": "enterprise"}}

    response = send("group", body)

    assert (response.status_code, response.json()) == (200, {"success": True})
    account = apps.get_model("customers", "Account").objects.get(external_id="acme")
    assert account.traits["plan"] == "enterprise"
    membership = apps.get_model("customers", "AccountMembership").objects.get()
    assert (membership.account_id, membership.customer.external_id) == (account.pk, "u-1")


def test_a_group_without_group_id_is_400_naming_it(send):
    response = send("group", {"userId": "u-1", "traits": {"name": "Acme"}})

    assert response.status_code == 400
    assert "groupId" in response.json()["error"]


def test_alias_moves_the_previous_profile_s_events_to_the_customer(send):
    assert send("track", {"anonymousId": "anon-1", "event": "viewed_pricing"}).status_code == 200

    response = send("alias", {"previousId": "anon-1", "userId": "u-1"})

    assert (response.status_code, response.json()) == (200, {"success": True})
    event = Event.objects.get(name="viewed_pricing")
    assert event.customer.external_id == "u-1"


def test_an_alias_to_itself_is_400(send):
    response = send("alias", {"previousId": "u-1", "userId": "u-1"})

    assert response.status_code == 400
    assert not Customer.objects.exists()


def test_a_call_with_only_an_anonymous_id_is_stored(send):
    assert send("track", {"anonymousId": "anon-1", "event": "signed_up"}).status_code == 200
    assert Event.objects.get().name == "signed_up"


def test_a_batch_carries_every_call_type(send):
    batch = [
        {"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}},
        {"type": "track", "userId": "u-1", "event": "login"},
        {"type": "page", "userId": "u-1", "name": "Home"},
        {"type": "screen", "userId": "u-1", "name": "Home"},
        {"type": "group", "userId": "u-1", "groupId": "acme"},
        {"type": "alias", "previousId": "anon-9", "userId": "u-1"},
        {"type": "group", "userId": "u-1"},
    ]

    response = send("batch", {"batch": batch, "sentAt": "2026-11-20T08:30:00Z"})

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 6
    assert [error["index"] for error in body["errors"]] == [6]
    assert "groupId" in body["errors"][0]["error"]
    assert set(Event.objects.values_list("name", flat=True)) >= {
        "login",
        "page_viewed",
        "screen_viewed",
    }


@pytest.mark.parametrize("endpoint", ["page", "screen", "group", "alias"])
def test_the_new_endpoints_are_documented_with_their_bodies(client, endpoint):
    doc = json.loads(client.get("/api/v1/openapi.json").content)
    name = f"{endpoint.capitalize()}In"

    operation = doc["paths"][f"/api/v1/{endpoint}"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{name}"
    }
    assert name in doc["components"]["schemas"]
    assert {"200", "400", "401", "413"} <= set(operation["responses"])
