"""The OpenAPI document says what the API does, so that a client generated from
it is right (issue 15): and each fact it states is checked against the API."""

import json

import pytest

from apps.customers.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def doc(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content)


def resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_user_id_is_documented_as_a_string_or_an_integer(doc, api):
    schemas = doc["components"]["schemas"]
    kinds = {option["type"] for option in schemas["ConsentIn"]["properties"]["userId"]["anyOf"]}
    assert kinds == {"string", "integer"}
    # A Segment call may name an anonymous visitor instead (or send null).
    for name in ("IdentifyIn", "TrackIn"):
        for field in ("userId", "anonymousId"):
            options = schemas[name]["properties"][field]["anyOf"]
            assert {option["type"] for option in options} == {"string", "integer", "null"}

    track = api("track", {"userId": 7, "event": "login"})
    batch = api("batch", {"batch": [{"type": "identify", "userId": 8}]})
    consent = api("consent", {"userId": 9, "channel": "email", "status": "granted"})

    assert [track.status_code, batch.status_code, consent.status_code] == [200, 200, 200]
    assert batch.json() == {"accepted": 1, "errors": []}
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"7", "8", "9"}


def test_a_batch_is_documented_to_answer_200_with_per_item_errors(doc, api):
    responses = doc["paths"]["/api/v1/batch"]["post"]["responses"]
    out = resolve(doc, responses["200"]["content"]["application/json"]["schema"])
    error = resolve(doc, out["properties"]["errors"]["items"])

    assert out["properties"]["accepted"]["type"] == "integer"
    assert set(error["required"]) == {"index", "error"}
    assert "refused" in responses["200"]["description"]
    # Any item: one that is not a call is refused alone, so the request is not.
    items = doc["components"]["schemas"]["BatchIn"]["properties"]["batch"]["items"]
    assert set(items) == {"description"} and "refused alone" in items["description"]

    answer = api("batch", {"batch": [{"type": "track", "userId": "u"}]})
    assert answer.status_code == 200
    assert answer.json() == {
        "accepted": 0,
        "errors": [{"index": 0, "error": "event: Field required"}],
    }


def test_the_consent_ip_is_documented_as_an_ipv4_or_ipv6_address(doc, api):
    ip = doc["components"]["schemas"]["ConsentIn"]["properties"]["ip"]
    formats = {option.get("format") for option in ip["anyOf"]}

    assert formats == {"ipv4", "ipv6", None}  # None: the null option
    for address in ("203.0.113.7", "2001:db8::1"):
        body = {"userId": "u", "channel": "email", "status": "granted", "ip": address}
        assert api("consent", body).status_code == 200


def test_every_operation_documents_its_errors_with_their_shape(doc, api):
    for path, operations in doc["paths"].items():
        if path.endswith(("/openapi.json", "/docs")):
            continue
        for method, operation in operations.items():
            for status in ("400", "401", "413"):
                response = operation["responses"][status]
                schema = resolve(doc, response["content"]["application/json"]["schema"])
                assert schema["required"] == ["error", "code", "message"], (path, method, status)
                assert response["description"] not in ("", "OK"), (path, method, status)
            assert "names each" in operation["responses"]["400"]["description"]

    assert set(api("track", {}, key=None).json()) == {"error", "code", "message"}
    assert set(api("track", {"userId": ""}).json()) == {"error", "code", "message"}


INGESTION = ("identify", "track", "page", "screen", "group", "alias", "batch")


def test_the_ingestion_calls_document_basic_and_bearer_and_describe_write_key(doc):
    schemes = doc["components"]["securitySchemes"]

    assert schemes["WriteKeyBasic"]["type"] == "http"
    assert schemes["WriteKeyBasic"]["scheme"] == "basic"
    assert "writeKey" in schemes["WriteKeyBasic"]["description"]
    assert schemes["ApiKeyAuth"]["scheme"] == "bearer"
    for endpoint in INGESTION:
        operation = doc["paths"][f"/api/v1/{endpoint}"]["post"]
        assert operation["security"] == [{"WriteKeyBasic": []}, {"ApiKeyAuth": []}], endpoint
        assert "writeKey" in operation["description"], endpoint
    # The consent API takes Bearer only, and says so.
    assert doc["paths"]["/api/v1/consent"]["post"]["security"] == [{"ApiKeyAuth": []}]


def test_gzip_the_content_types_and_the_limits_are_documented(doc):
    assert "Content-Encoding: gzip" in doc["info"]["description"]
    for setting in ("SEGMENT_MAX_CALL_BYTES", "SEGMENT_MAX_BATCH_BYTES", "SEGMENT_MAX_BATCH_ITEMS"):
        assert setting in doc["info"]["description"]
    for endpoint in INGESTION:
        operation = doc["paths"][f"/api/v1/{endpoint}"]["post"]
        assert "gzip" in operation["description"] and "text/plain" in operation["description"]
        limit = "SEGMENT_MAX_BATCH_BYTES" if endpoint == "batch" else "SEGMENT_MAX_CALL_BYTES"
        assert limit in operation["responses"]["413"]["description"], endpoint
    items = doc["paths"]["/api/v1/batch"]["post"]["responses"]["413"]["description"]
    assert "SEGMENT_MAX_BATCH_ITEMS" in items


def test_the_operation_ids_are_the_ones_clients_were_generated_with(doc):
    for endpoint in INGESTION:
        operation = doc["paths"][f"/api/v1/{endpoint}"]["post"]
        assert operation["operationId"] == f"apps_customers_api_{endpoint}"
