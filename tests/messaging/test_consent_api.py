from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from apps.customers.models import Customer
from apps.messaging.models import ConsentRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(api):
    api("identify", {"userId": "u-1", "traits": {"phone": "+14155550123"}})
    return Customer.objects.get(external_id="u-1")


def test_a_grant_is_appended_to_the_ledger_with_everything_it_says(api, customer):
    response = api(
        "consent",
        {
            "userId": "u-1",
            "channel": "sms",
            "status": "granted",
            "source": "preferences",
            "wording": "Yes, text me offers. Msg & data rates may apply.",
            "timestamp": "2026-03-01T10:00:00+01:00",
            "ip": "2001:db8::7",
            "userAgent": "Mozilla/5.0 (iPhone)",
        },
    )

    assert response.status_code == 200
    record = ConsentRecord.objects.get()
    assert response.json() == {
        "success": True,
        "id": record.pk,
        "recordedAt": "2026-03-01T09:00:00Z",
        "consent": True,
    }
    assert (record.customer, record.channel, record.topic, record.status, record.source) == (
        customer,
        "sms",
        "",
        "granted",
        "preferences",
    )
    assert record.recorded_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert (record.ip_address, record.user_agent) == ("2001:db8::7", "Mozilla/5.0 (iPhone)")
    assert record.wording.startswith("Yes, text me offers")


def test_defaults_are_now_and_the_api_source(api, customer):
    before = timezone.now()

    api("consent", {"userId": "u-1", "channel": "email", "status": "revoked", "topic": "tips"})

    record = ConsentRecord.objects.get()
    assert (record.source, record.topic, record.ip_address) == ("api", "tips", None)
    assert before <= record.recorded_at <= timezone.now()


def test_the_answer_says_a_topic_stays_off_while_the_whole_channel_is_revoked(api, customer):
    api("consent", {"userId": "u-1", "channel": "email", "status": "revoked"})

    response = api(
        "consent", {"userId": "u-1", "channel": "email", "status": "granted", "topic": "tips"}
    )

    assert response.status_code == 200
    assert response.json()["consent"] is False


def test_consent_for_a_new_user_id_creates_the_customer(api):
    response = api("consent", {"userId": 42, "channel": "email", "status": "granted"})

    assert response.status_code == 200
    assert ConsentRecord.objects.get().customer == Customer.objects.get(external_id="42")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"channel": "sms", "status": "granted"}, "userId: Field required"),
        (
            {"userId": "u-1", "channel": "fax", "status": "granted"},
            "channel: Input should be 'email' or 'sms'",
        ),
        ({"userId": "u-1", "channel": "sms"}, "status: Field required"),
        (
            {"userId": "u-1", "channel": "sms", "status": "yes"},
            "status: Input should be 'granted' or 'revoked'",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "topic": "tips"},
            "topic: topics are for email only",
        ),
        (
            {"userId": "u-1", "channel": "email", "status": "granted", "topic": "Big news!"},
            "topic: String should match pattern",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "source": "rumour"},
            "source: Input should be 'api'",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "ip": "999.0.0.1"},
            "ip: value is not a valid IPv4 or IPv6 address",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "ip": False},
            "ip: must be an IPv4 or IPv6 address as text",
        ),
        (
            {"userId": "u-1", "channel": "email", "status": "granted", "topic": "tips--daily"},
            "topic: String should match pattern",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "timestamp": "yesterday"},
            "timestamp: Value error, 'yesterday' is not an ISO-8601 timestamp",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "chanel": "sms"},
            "chanel: Extra inputs are not permitted",
        ),
        (
            {"userId": "u-1", "channel": "sms", "status": "granted", "userAgent": "x" * 501},
            "userAgent: String should have at most 500 characters",
        ),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(api, customer, body, named):
    response = api("consent", body)

    assert response.status_code == 400
    assert named.removeprefix("timestamp: Value error, ") in response.json()["error"]
    assert response.json()["error"].startswith(named.split(":")[0])
    assert not ConsentRecord.objects.exists()


def test_a_timestamp_in_the_future_is_refused(api, customer):
    tomorrow = (timezone.now() + timedelta(days=1)).isoformat()

    response = api(
        "consent", {"userId": "u-1", "channel": "sms", "status": "granted", "timestamp": tomorrow}
    )

    assert (response.status_code, response.json()["error"]) == (
        400,
        "timestamp: is in the future",
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "request body is empty"),
        (b"{not json", "request body is not valid JSON"),
        (b"[1, 2]", "request body must be a JSON object, got list"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(api, raw, problem):
    response = api("consent", None, raw=raw)

    assert response.status_code == 400
    assert response.json()["error"].startswith(problem)


def test_consent_needs_a_valid_api_key(api):
    body = {"userId": "u-1", "channel": "sms", "status": "granted"}

    assert api("consent", body, key=None).status_code == 401
    response = api("consent", body, key="tk_wrong")
    assert (response.status_code, response.json()["error"]) == (
        401,
        "missing or invalid API key (Authorization: Bearer <key>)",
    )
    assert not ConsentRecord.objects.exists()


def test_the_endpoint_and_its_body_are_in_the_openapi_document(client):
    schema = client.get("/api/v1/openapi.json").json()

    operation = schema["paths"]["/api/v1/consent"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConsentIn"
    }
    body = schema["components"]["schemas"]["ConsentIn"]
    assert set(body["required"]) == {"userId", "channel", "status"}
    assert {"topic", "source", "wording", "timestamp", "ip", "userAgent"} <= set(body["properties"])
    assert set(operation["responses"]) >= {"200", "400", "401"}


def test_consent_for_an_aliased_user_id_is_recorded_on_the_customer_it_became(api):
    from apps.customers.models import Customer
    from apps.customers.schemas import AliasIn, IdentifyIn
    from apps.customers.services import ingest

    now = timezone.now()
    ingest([IdentifyIn(userId="old-1"), IdentifyIn(userId="new-1")], received_at=now)
    ingest([AliasIn(previousId="old-1", userId="new-1")], received_at=now)

    response = api("consent", {"userId": "old-1", "channel": "sms", "status": "granted"})

    assert response.status_code == 200
    assert ConsentRecord.objects.get().customer == Customer.objects.get(external_id="new-1")
