import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.customers.models import ApiKey, Customer, Event, EventStat
from apps.customers.services import api_key_revoke
from tests.conftest import stats_mismatches

pytestmark = pytest.mark.django_db


# --- identify ---------------------------------------------------------------


def test_identify_creates_a_customer_and_fills_contact_columns_from_traits(api):
    response = api(
        "identify",
        {
            "userId": "u-1",
            "traits": {
                "email": "ada@example.com",
                "phone": "+14155550123",
                "timezone": "Europe/Paris",
                "locale": "fr-FR",
                "plan": "pro",
            },
        },
    )

    assert response.status_code == 200
    assert response.json() == {"success": True}
    customer = Customer.objects.get(external_id="u-1")
    assert (customer.email, customer.phone, customer.timezone, customer.locale) == (
        "ada@example.com",
        "+14155550123",
        "Europe/Paris",
        "fr-FR",
    )
    assert customer.traits["plan"] == "pro"
    assert customer.last_seen_at is not None


def test_identify_merges_traits_into_the_stored_ones(api):
    api("identify", {"userId": "u-1", "traits": {"plan": "starter", "seats": 3}})
    api("identify", {"userId": "u-1", "traits": {"plan": "pro", "mrr": 199}})

    customer = Customer.objects.get(external_id="u-1")
    assert customer.traits == {"plan": "pro", "seats": 3, "mrr": 199}
    assert Customer.objects.count() == 1


def test_identify_accepts_a_numeric_user_id_as_a_string(api):
    assert api("identify", {"userId": 42, "traits": {}}).status_code == 200
    assert Customer.objects.filter(external_id="42").exists()


@pytest.mark.parametrize(
    ("traits", "named"),
    [
        ({"phone": "415-555-0123"}, "traits.phone: '415-555-0123' is not an E.164 phone number"),
        ({"timezone": "Mars/Olympus"}, "traits.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ({"email": "not-an-address"}, "traits.email: 'not-an-address' is not an email address"),
        ({"email": 7}, "traits.email: must be a string"),
    ],
)
def test_identify_refuses_invalid_contact_traits_naming_the_field(api, traits, named):
    response = api("identify", {"userId": "u-1", "traits": traits})

    assert response.status_code == 400
    assert named in response.json()["error"]
    assert not Customer.objects.exists()


def test_identify_without_user_id_is_refused_naming_the_field(api):
    response = api("identify", {"traits": {"plan": "pro"}})

    assert response.status_code == 400
    assert response.json()["error"] == "userId: one of userId and anonymousId is required"


def test_identify_with_traits_that_are_not_an_object_is_refused(api):
    response = api("identify", {"userId": "u-1", "traits": ["plan"]})

    assert response.status_code == 400
    assert response.json()["error"].startswith("traits:")


# --- track ------------------------------------------------------------------


def test_track_appends_an_event_and_creates_the_customer_when_new(api):
    response = api(
        "track",
        {
            "userId": "u-9",
            "event": "feature_used",
            "properties": {"feature": "reports", "count": 2},
            "timestamp": "2026-11-20T08:30:00+02:00",
        },
    )

    assert response.status_code == 200
    event = Event.objects.get()
    assert event.customer.external_id == "u-9"
    assert event.name == "feature_used"
    assert event.properties == {"feature": "reports", "count": 2}
    assert event.occurred_at == datetime(2026, 11, 20, 6, 30, tzinfo=UTC)
    assert event.customer.last_seen_at == event.occurred_at


def test_track_takes_a_naive_timestamp_as_utc(api):
    api("track", {"userId": "u-1", "event": "login", "timestamp": "2026-11-20T08:30:00"})

    assert Event.objects.get().occurred_at == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)


def test_track_without_timestamp_happened_when_received(api):
    before = timezone.now()
    api("track", {"userId": "u-1", "event": "login"})

    event = Event.objects.get()
    assert before <= event.occurred_at == event.received_at <= timezone.now()


def test_a_repeated_message_id_stores_nothing_new_and_still_succeeds(api):
    body = {"userId": "u-1", "event": "login", "messageId": "msg-1"}

    first, second = api("track", body), api("track", {**body, "event": "logout"})

    assert first.status_code == second.status_code == 200
    assert second.json() == {"success": True}
    assert list(Event.objects.values_list("name", flat=True)) == ["login"]
    assert EventStat.objects.get().count == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"event": "login"}, "userId: one of userId and anonymousId is required"),
        ({"userId": "u-1"}, "event: Field required"),
        ({"userId": "u-1", "event": 5}, "event: Input should be a valid string"),
        ({"userId": "u-1", "event": ""}, "event: String should have at least 1 character"),
        ({"userId": "", "event": "x"}, "userId: String should have at least 1 character"),
        ({"userId": "u-1", "event": "x", "properties": "a"}, "properties: Input should be"),
        ({"userId": "u-1", "event": "x", "timestamp": "yesterday"}, "timestamp: 'yesterday'"),
        ({"userId": "u-1", "event": "x", "timestamp": 1700000000}, "timestamp: must be an ISO"),
        ({"userId": "u-1", "event": "x", "messageId": ""}, "messageId: String should have"),
    ],
)
def test_track_refuses_wrong_types_naming_the_offending_field(api, body, error):
    response = api("track", body)

    assert response.status_code == 400
    assert error in response.json()["error"]
    assert not Event.objects.exists()


def test_unknown_fields_such_as_segment_context_are_ignored(api):
    response = api(
        "track",
        {"userId": "u-1", "event": "login", "context": {"ip": "1.2.3.4"}, "anonymousId": "a"},
    )

    assert response.status_code == 200


# --- malformed bodies, auth, limits ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"userId": "u-1",', "request body is not valid JSON: Expecting property name"),
        (b"", "request body is empty"),
        (b"[1, 2]", "request body must be a JSON object, got list"),
        (b'"text"', "request body must be a JSON object, got str"),
        (b"\xff\xfe", "request body is not UTF-8 text"),
    ],
)
@pytest.mark.parametrize("endpoint", ["identify", "track", "batch"])
def test_malformed_bodies_are_refused_with_a_message(api, endpoint, raw, error):
    response = api(endpoint, None, raw=raw)

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


def test_the_json_error_says_where_it_is(api):
    response = api("track", None, raw=b'{"userId": "u-1",\n "event": }')

    assert response.json()["error"].endswith("(line 2, column 11)")


@pytest.mark.parametrize("endpoint", ["identify", "track", "batch"])
def test_a_missing_key_is_401(api, endpoint):
    response = api(endpoint, {"userId": "u-1", "event": "x"}, key=None)

    assert response.status_code == 401
    assert "API key" in response.json()["error"]


def test_a_wrong_key_is_401(api):
    assert api("track", {"userId": "u-1", "event": "x"}, key="tk_nope").status_code == 401


def test_a_revoked_key_is_401(api, api_key):
    api_key_revoke(api_key[0], now=timezone.now())

    assert api("track", {"userId": "u-1", "event": "x"}).status_code == 401
    assert not Event.objects.exists()


def test_keys_are_stored_hashed_and_their_use_is_recorded(api, api_key):
    record, key = api_key
    api("track", {"userId": "u-1", "event": "x"})

    record.refresh_from_db()
    assert key not in {record.key_hash, record.prefix}
    assert record.key_hash == ApiKey.hash(key)
    assert record.last_used_at is not None


@override_settings(API_MAX_BODY_BYTES=2048)
def test_a_body_over_the_limit_is_413_and_stores_nothing(api):
    batch = [{"type": "track", "userId": f"u-{i}", "event": "login"} for i in range(100)]

    response = api("batch", {"batch": batch})

    assert response.status_code == 413
    assert "limit is 2048 bytes" in response.json()["error"]
    assert not Customer.objects.exists()


def test_the_default_body_limit_is_one_mebibyte(api):
    padding = "x" * (1024 * 1024)
    response = api("track", {"userId": "u-1", "event": "x", "properties": {"p": padding}})

    assert response.status_code == 413


def test_only_post_is_allowed(client):
    assert client.get("/api/v1/track").status_code == 405


# --- batch ------------------------------------------------------------------


def test_a_batch_stores_the_valid_items_and_reports_the_invalid_ones_by_index(api):
    response = api(
        "batch",
        {
            "batch": [
                {"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}},
                {"type": "track", "userId": "u-1", "event": "login"},
                {"type": "stare", "userId": "u-1"},
                {"type": "track", "event": "login"},
                "not an object",
                {"type": "identify", "userId": "u-2", "traits": {"phone": "12"}},
                {"type": "track", "userId": "u-3", "event": "signed_up"},
            ]
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 3
    assert body["errors"] == [
        {
            "index": 2,
            "error": "type: must be one of identify, track, page, screen, group, alias, "
            "got 'stare'",
        },
        {"index": 3, "error": "userId: one of userId and anonymousId is required"},
        {"index": 4, "error": "must be an object, got str"},
        {
            "index": 5,
            "error": "traits.phone: '12' is not an E.164 phone number (like +14155550123)",
        },
    ]
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"u-1", "u-3"}
    assert Event.objects.count() == 2


def test_a_batch_with_a_message_id_twice_stores_it_once(api):
    item = {"type": "track", "userId": "u-1", "event": "login", "messageId": "m-1"}

    response = api("batch", {"batch": [item, item]})

    assert response.json() == {"accepted": 2, "errors": []}
    assert Event.objects.count() == 1
    assert EventStat.objects.get().count == 1


@pytest.mark.parametrize("body", [{}, {"batch": {"type": "track"}}, {"batch": None}])
def test_a_batch_that_is_not_a_list_is_refused(api, body):
    response = api("batch", body)

    assert response.status_code == 400
    assert response.json()["error"] == "batch: must be a list of calls"


def test_an_empty_batch_accepts_nothing(api):
    assert api("batch", {"batch": []}).json() == {"accepted": 0, "errors": []}


def test_identify_in_a_batch_applies_in_order(api):
    api(
        "batch",
        {
            "batch": [
                {"type": "identify", "userId": "u-1", "traits": {"plan": "starter"}},
                {"type": "identify", "userId": "u-1", "traits": {"plan": "pro"}},
            ]
        },
    )

    assert Customer.objects.get().traits == {"plan": "pro"}


def test_out_of_order_timestamps_keep_event_stats_exact(api):
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for offset in (5, 1, 9, 3):
        at = (base + timedelta(days=offset)).isoformat()
        api("track", {"userId": "u-1", "event": "login", "timestamp": at})

    stat = EventStat.objects.get()
    assert (stat.count, stat.first_at, stat.last_at) == (
        4,
        base + timedelta(days=1),
        base + timedelta(days=9),
    )
    assert stats_mismatches() == []


# --- the document -----------------------------------------------------------


def test_the_openapi_document_describes_every_endpoint_and_body(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    doc = json.loads(response.content)
    # Other apps add their endpoints (consent, …); the ingestion ones are all here.
    assert {
        f"/api/v1/{endpoint}"
        for endpoint in ("identify", "track", "page", "screen", "group", "alias", "batch")
    } <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"IdentifyIn", "TrackIn", "BatchIn", "BatchOut"} <= set(schemas)
    assert "userId" in schemas["TrackIn"]["properties"]
    batch_op = doc["paths"]["/api/v1/batch"]["post"]
    assert batch_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchIn"
    }
    assert {"200", "400", "401", "413"} <= set(batch_op["responses"])
