"""Where the ingestion API finds the key (issue 17): Basic auth's user name as
Segment's SDKs send it, `writeKey` in the body, or Bearer; any wrong,
missing or malformed credential is a 401, never a 500."""

import base64
import gzip
import json

import pytest

from apps.customers.models import Customer, Event

pytestmark = pytest.mark.django_db

TRACK = {"userId": "u-1", "event": "login"}


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def key(api_key) -> str:
    return api_key[1]


@pytest.fixture
def send(client):
    """POST to /api/v1/<endpoint> with the given Authorization header (or none)."""

    def post(endpoint, body, *, authorization=None, raw=None, encoding=None):
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        if encoding:
            headers["Content-Encoding"] = encoding
        return client.post(
            f"/api/v1/{endpoint}", data=data, content_type="application/json", headers=headers
        )

    return post


def test_basic_auth_with_the_key_as_user_name_and_an_empty_password_works(send, key):
    response = send("track", TRACK, authorization=basic(key))

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert Event.objects.get().name == "login"


def test_basic_auth_ignores_the_password(send, key):
    assert send("track", TRACK, authorization=basic(key, "anything")).status_code == 200


def test_basic_auth_without_the_padding_of_its_base64_works(send, key):
    # base64 of "<43 characters>:" is 60 characters with one '=' of padding.
    encoded = base64.b64encode(f"{key}:".encode()).decode().rstrip("=")

    assert send("track", TRACK, authorization=f"basic {encoded}").status_code == 200


def test_basic_auth_with_a_wrong_key_is_401(send):
    response = send("track", TRACK, authorization=basic("tk_not_a_key"))

    assert response.status_code == 401
    assert "Basic auth" in response.json()["error"]
    assert not Event.objects.exists()


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic ",
        "Basic !!!not base64!!!",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),  # not UTF-8
        "Basic " + base64.b64encode(b":password").decode(),  # no user name
        "Basic " + base64.b64encode(b"x" * 5000).decode(),
        "Digest username=x",
        "Bearer",
        "tk_something",
    ],
)
def test_a_malformed_authorization_header_is_401_not_500(send, header):
    response = send("track", TRACK, authorization=header)

    assert response.status_code == 401
    assert set(response.json()) == {"error", "code", "message"}


def test_a_valid_write_key_in_the_body_works_without_a_header(send, key):
    response = send("track", {**TRACK, "writeKey": key})

    assert response.status_code == 200
    event = Event.objects.get()
    assert "writeKey" not in event.properties


def test_a_write_key_in_a_gzipped_batch_works_without_a_header(send, key):
    body = {"writeKey": key, "batch": [{"type": "identify", "userId": "u-1", "writeKey": key}]}

    response = send("batch", None, raw=gzip.compress(json.dumps(body).encode()), encoding="gzip")

    assert response.json() == {"accepted": 1, "errors": []}
    assert "writeKey" not in Customer.objects.get().traits


@pytest.mark.parametrize(
    "write_key", ["tk_wrong", "", 42, None, {"k": 1}, ["k"], "\ud800", "k" * 5000]
)
def test_a_wrong_or_odd_write_key_in_the_body_is_401(send, write_key):
    response = send("track", {**TRACK, "writeKey": write_key})

    assert response.status_code == 401
    assert not Event.objects.exists()


def test_bearer_still_works(send, key):
    assert send("track", TRACK, authorization=f"Bearer {key}").status_code == 200


def test_any_one_valid_credential_is_enough(send, key):
    """Segment's SDKs send the key twice (header and body); one right is enough."""
    response = send("track", {**TRACK, "writeKey": key}, authorization=basic("tk_old"))

    assert response.status_code == 200


@pytest.mark.parametrize("endpoint", ["identify", "track", "batch"])
def test_no_credential_at_all_is_401_naming_every_place_for_the_key(send, endpoint):
    response = send(endpoint, {"batch": []} if endpoint == "batch" else TRACK)

    assert response.status_code == 401
    error = response.json()["error"]
    assert "Bearer" in error and "Basic auth" in error and "writeKey" in error


def test_without_a_header_a_body_that_is_not_json_says_so(send):
    """The body was the only place for a key: what is wrong with it is the answer."""
    response = send("track", None, raw=b'{"userId": ')

    assert response.status_code == 400
    assert response.json()["error"].startswith("request body is not valid JSON")


def test_with_a_wrong_header_key_a_body_that_is_not_json_is_401(send):
    response = send("track", None, raw=b'{"userId": ', authorization=basic("tk_wrong"))

    assert response.status_code == 401
