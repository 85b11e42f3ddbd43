"""How the ingestion API reads bodies (issue 17): any Content-Type, gzip under
a cap on what it inflates to, Segment's limits answered 413, a batch that
fails only item by item; and never a 5xx for anything a client sends."""

import base64
import gzip
import io
import json
import random
import time
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory, override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.customers.api.routes import envelope_apply
from apps.customers.models import Customer, Event
from config.wsgi import application

pytestmark = pytest.mark.django_db

TRACK = {"userId": "u-1", "event": "login"}
FORM = "application/x-www-form-urlencoded"
KIB = 1024


@pytest.fixture
def send(client, api_key):
    """POST to /api/v1/<endpoint> with Segment's Basic auth, as its SDKs do:
    a body as JSON (gzipped if asked), or raw bytes with the Content-Encoding
    given (none by default)."""
    authorization = "Basic " + base64.b64encode(f"{api_key[1]}:".encode()).decode()

    def post(
        endpoint, body=None, *, raw=None, gzipped=False, encoding=None, content_type="text/plain"
    ):
        data = raw if raw is not None else json.dumps(body).encode()
        if gzipped:
            data, encoding = gzip.compress(data), "gzip"
        headers = {"Authorization": authorization}
        if encoding:
            headers["Content-Encoding"] = encoding
        return client.generic(
            "POST", f"/api/v1/{endpoint}", data, content_type=content_type, headers=headers
        )

    return post


def tracks(count: int, **extra) -> list[dict]:
    return [{"type": "track", "userId": f"u-{i}", "event": "login", **extra} for i in range(count)]


def padded(size: int) -> dict:
    """A track call whose JSON is `size` bytes."""
    body = {**TRACK, "properties": {"pad": ""}}
    body["properties"]["pad"] = "x" * (size - len(json.dumps(body)))
    assert len(json.dumps(body)) == size
    return body


# --- Content-Type and gzip ---------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", FORM, ""])
@pytest.mark.parametrize("gzipped", [False, True])
def test_a_json_body_is_read_whatever_its_content_type(send, content_type, gzipped):
    single = send("track", TRACK, content_type=content_type, gzipped=gzipped)
    many = send("batch", {"batch": tracks(2)}, content_type=content_type, gzipped=gzipped)

    assert (single.status_code, single.json()) == (200, {"success": True})
    assert (many.status_code, many.json()) == (200, {"accepted": 2, "errors": []})
    assert Event.objects.count() == 3


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_form_content_type_is_never_parsed_as_a_form(send, gzipped):
    """RudderStack's Node SDK sends gzipped JSON as a form. Were Django to
    parse it, 2,000 '&' would be over DATA_UPLOAD_MAX_NUMBER_FIELDS (a 400)."""
    body = {**TRACK, "properties": {"query": "a=1&" * 2000}}

    response = send("track", body, content_type=FORM, gzipped=gzipped)

    assert response.status_code == 200
    assert Event.objects.get().properties == {"query": "a=1&" * 2000}


def test_a_gzip_stream_of_several_members_is_one_body(send):
    text = json.dumps({"batch": tracks(2)}).encode()

    response = send(
        "batch", raw=gzip.compress(text[:10]) + gzip.compress(text[10:]), encoding="gzip"
    )

    assert response.json() == {"accepted": 2, "errors": []}


def test_x_gzip_is_gzip(send):
    response = send("track", raw=gzip.compress(json.dumps(TRACK).encode()), encoding="x-gzip")

    assert response.status_code == 200


def test_a_gzip_bomb_is_413_at_once_without_inflating_it(send):
    """50 MB of zeros, 50 kB gzipped: inflating stops one byte past the limit."""
    bomb = gzip.compress(b"0" * 50_000_000, compresslevel=9)
    assert len(bomb) < 100 * KIB

    started = time.perf_counter()
    response = send("batch", raw=bomb, encoding="gzip")
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    again = send("batch", raw=bomb, encoding="gzip")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert response.status_code == again.status_code == 413
    assert response.json()["error"] == (
        "request body is over 512000 bytes; the limit for a batch is 512000 bytes "
        "(SEGMENT_MAX_BATCH_BYTES)"
    )
    assert elapsed < 0.5
    assert peak < 5_000_000  # the 50 MB were never allocated


def test_a_gzip_bomb_on_a_single_call_names_the_call_limit(send):
    response = send("track", raw=gzip.compress(b" " * 1_000_000), encoding="gzip")

    assert response.status_code == 413
    assert (
        "the limit for a single call is 32768 bytes (SEGMENT_MAX_CALL_BYTES)"
        in (response.json()["error"])
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"userId": "u-1", "event": "login"}', "request body is not valid gzip: "),
        (gzip.compress(json.dumps(TRACK).encode())[:-12], "request body is not valid gzip: "),
        (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "request body is not valid gzip: "),
        (b"", "request body is not valid gzip: the stream ends early"),
        (gzip.compress(json.dumps(TRACK).encode()) + b"trailing", "request body is not valid gzip"),
    ],
    ids=["not-gzip", "truncated", "corrupt", "empty", "trailing-garbage"],
)
@pytest.mark.parametrize("endpoint", ["track", "batch"])
def test_a_corrupt_gzip_stream_is_400(send, endpoint, data, error):
    response = send(endpoint, raw=data, encoding="gzip")

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert not Event.objects.exists()


def test_a_gzip_stream_with_a_corrupt_checksum_is_400(send):
    stream = bytearray(gzip.compress(json.dumps(TRACK).encode()))
    stream[-5] ^= 0xFF  # the CRC-32 of the trailer

    response = send("track", raw=bytes(stream), encoding="gzip")

    assert response.status_code == 400
    assert response.json()["error"] == "request body is not valid gzip: incorrect data check"


def test_an_unknown_content_encoding_is_400_naming_it(send):
    response = send("track", raw=zlib.compress(json.dumps(TRACK).encode()), encoding="br")

    assert response.status_code == 400
    assert response.json()["error"] == "Content-Encoding 'br' is not supported: send gzip or none"


def test_identity_encoding_is_no_encoding(send):
    assert send("track", TRACK, encoding="identity").status_code == 200


def call_chunked(data: bytes | io.RawIOBase, key: str, **headers):
    """Call the WSGI application as gunicorn does for a chunked body: no
    CONTENT_LENGTH, the body de-chunked on `wsgi.input`, whose end the server
    marks (`wsgi.input_terminated`)."""
    environ = RequestFactory().post("/api/v1/batch").environ
    del environ["CONTENT_LENGTH"]
    environ.update(
        {
            "wsgi.input": io.BytesIO(data) if isinstance(data, bytes) else data,
            "wsgi.input_terminated": True,
            "HTTP_TRANSFER_ENCODING": "chunked",
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            **headers,
        }
    )
    answered = {}
    # As Django's test client does: the request signals must not close the
    # test's connection (its transaction holds the test's rows).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = application(environ, lambda status, _: answered.update(status=status))
        body = b"".join(response)
        response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return int(answered["status"].split()[0]), json.loads(body)


def test_a_chunked_gzip_body_is_read(api_key):
    data = gzip.compress(json.dumps({"batch": tracks(2)}).encode())

    answer = call_chunked(data, api_key[1], HTTP_CONTENT_ENCODING="gzip")

    assert answer == (200, {"accepted": 2, "errors": []})
    assert Event.objects.count() == 2


@override_settings(API_MAX_BODY_BYTES=100)
def test_a_chunked_body_over_the_raw_limit_is_413(api_key):
    status, body = call_chunked(json.dumps({"batch": tracks(5)}).encode(), api_key[1])

    assert status == 413
    assert body["error"] == (
        "request body is over 100 bytes as sent; the limit is 100 bytes (API_MAX_BODY_BYTES)"
    )
    assert not Event.objects.exists()


class BadChunks(io.RawIOBase):
    """A server's stream that fails as gunicorn's does on a malformed chunk
    (its own exception class, not an OSError)."""

    class InvalidChunkSize(Exception):
        pass

    def read(self, size=-1):
        raise self.InvalidChunkSize("zz")


class ClientGone(io.RawIOBase):
    def read(self, size=-1):
        raise OSError("connection reset by peer")


def test_a_malformed_chunked_body_is_400_not_500(api_key):
    status, body = call_chunked(BadChunks(), api_key[1])

    assert (status, body["error"]) == (400, "request body is not valid chunked transfer encoding")


def test_a_body_cut_short_by_the_client_is_400_not_500(client, api_key):
    response = client.generic(
        "POST",
        "/api/v1/track",
        headers={"Authorization": f"Bearer {api_key[1]}"},
        **{"wsgi.input": ClientGone(), "CONTENT_LENGTH": "100"},
    )

    assert response.status_code == 400
    assert response.json()["error"] == "request body could not be read to its end"


# --- Segment's limits ---------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_single_call_of_32_kib_is_stored_and_one_byte_more_is_413(send, gzipped):
    fits, over = (
        send("track", padded(32 * KIB), gzipped=gzipped),
        send("identify", padded(32 * KIB + 1), gzipped=gzipped),
    )

    assert fits.status_code == 200
    assert over.status_code == 413
    assert over.json()["error"].endswith(
        "the limit for a single call is 32768 bytes (SEGMENT_MAX_CALL_BYTES)"
    )


def test_a_33_kb_call_is_413_and_stores_nothing(send):
    response = send("track", padded(33_000))

    assert response.status_code == 413
    assert response.json()["error"] == (
        "request body is 33000 bytes; the limit for a single call is 32768 bytes "
        "(SEGMENT_MAX_CALL_BYTES)"
    )
    assert not Customer.objects.exists()


@pytest.mark.parametrize("gzipped", [False, True])
def test_a_batch_over_500_kib_is_413_and_stores_nothing(send, gzipped):
    body = {"batch": [padded(20 * KIB) | {"type": "track"} for _ in range(26)]}  # 520 kB
    assert 501 * KIB < len(json.dumps(body)) < 1024 * KIB

    response = send("batch", body, gzipped=gzipped)

    assert response.status_code == 413
    assert (
        "the limit for a batch is 512000 bytes (SEGMENT_MAX_BATCH_BYTES)"
        in (response.json()["error"])
    )
    assert not Customer.objects.exists()


def test_a_batch_of_2501_items_is_413_naming_the_count(send):
    response = send("batch", {"batch": [{}] * 2501})

    assert response.status_code == 413
    assert (
        response.json()["error"] == "batch has 2501 items, at most 2500 (SEGMENT_MAX_BATCH_ITEMS)"
    )


@override_settings(SEGMENT_MAX_BATCH_ITEMS=3)
def test_a_batch_of_exactly_the_most_items_is_stored(send):
    assert send("batch", {"batch": tracks(3)}).json() == {"accepted": 3, "errors": []}
    assert send("batch", {"batch": tracks(4)}).status_code == 413


def test_the_limits_are_settings(send, settings):
    two, three = ({"batch": tracks(count)} for count in (2, 3))
    settings.SEGMENT_MAX_CALL_BYTES = 100
    settings.SEGMENT_MAX_BATCH_BYTES = len(json.dumps(two))

    assert send("track", padded(101)).status_code == 413
    assert send("batch", three).status_code == 413
    assert send("batch", two).status_code == 200


@override_settings(API_MAX_BODY_BYTES=2048)
def test_a_compressed_body_over_the_raw_limit_is_413_before_it_is_read(send):
    noise = base64.b64encode(random.Random(17).randbytes(3000)).decode()  # compresses little
    data = gzip.compress(json.dumps({**TRACK, "properties": {"n": noise}}).encode())
    assert len(data) > 2048

    response = send("track", raw=data, encoding="gzip")

    assert response.status_code == 413
    assert response.json()["error"] == (
        f"request body is {len(data)} bytes as sent (compressed); the limit is 2048 bytes "
        "(API_MAX_BODY_BYTES)"
    )


# --- whole-request refusals and per-item ones ---------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("endpoint", ["track", "batch"])
def test_invalid_json_is_400_saying_where(send, endpoint, gzipped):
    response = send(endpoint, raw=b'{"batch": [}', gzipped=gzipped)

    assert response.status_code == 400
    assert response.json()["error"] == (
        "request body is not valid JSON: Expecting value (line 1, column 12)"
    )


def test_a_batch_with_one_bad_item_stores_the_others_and_names_its_index(send):
    batch = tracks(3)
    batch[1] = {"type": "track", "userId": "u-1", "event": 7}

    response = send("batch", {"batch": batch}, gzipped=True, content_type=FORM)

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 2,
        "errors": [{"index": 1, "error": "event: Input should be a valid string"}],
    }
    assert Event.objects.count() == 2


def test_a_batch_envelope_may_carry_what_segment_sends(send, api_key):
    body = {
        "batch": tracks(2),
        "writeKey": api_key[1],
        "sentAt": "2026-11-20T08:30:00Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        "integrations": {},
        "_metadata": {"nodeVersion": "20"},
    }

    assert send("batch", body).json() == {"accepted": 2, "errors": []}


def test_a_single_call_may_leave_its_type_out_or_say_the_path_s(send):
    assert send("track", TRACK).status_code == 200
    assert send("track", {**TRACK, "type": "track"}).status_code == 200
    assert Event.objects.count() == 2


@pytest.mark.parametrize(
    ("said", "got"), [("identify", "'identify'"), (None, "NoneType"), ({"a": 1}, "dict")]
)
def test_a_single_call_of_another_type_than_its_path_is_400(send, said, got):
    response = send("track", {**TRACK, "type": said})

    assert response.status_code == 400
    assert response.json()["error"] == f"type: must be 'track' on /track (or left out), got {got}"


def test_a_single_call_refused_names_the_field(send):
    response = send("track", {"userId": "u-1"}, gzipped=True)

    assert response.status_code == 400
    assert response.json()["error"] == "event: Field required"


# --- the envelope ------------------------------------------------------------


def test_the_envelope_sent_at_goes_to_the_items_without_one():
    items = [{"type": "track"}, {"type": "track", "sentAt": "2026-01-02T00:00:00Z"}, "odd"]

    envelope_apply(items, sent_at="2026-01-01T00:00:00Z", context=None)

    assert [item["sentAt"] for item in items[:2]] == [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
    ]
    assert items[2] == "odd"


def test_the_envelope_context_lies_under_each_item_context():
    shared = {"library": {"name": "analytics-node"}, "locale": "en-US"}
    items = [{"context": {"locale": "fr-FR", "ip": "203.0.113.7"}}, {}, {"context": None}]

    envelope_apply(items, sent_at=None, context=shared)

    assert items[0]["context"] == {
        "library": {"name": "analytics-node"},
        "locale": "fr-FR",
        "ip": "203.0.113.7",
    }
    assert items[1]["context"] == items[2]["context"] == shared
    assert items[1]["context"] is not shared  # each item its own, whatever is done to it
    assert shared == {"library": {"name": "analytics-node"}, "locale": "en-US"}


def test_an_envelope_without_sent_at_or_context_changes_nothing():
    items = [{"type": "track", "userId": "u"}]

    envelope_apply(items, sent_at=None, context=None)

    assert items == [{"type": "track", "userId": "u"}]


def test_the_envelope_sent_at_corrects_the_clock_of_the_items_without_their_own(send):
    """A client whose clock runs an hour behind: its times are moved an hour on."""
    now = datetime.now(UTC)
    at = now - timedelta(days=1)
    behind = (now - timedelta(hours=1)).isoformat()
    batch = [
        {"type": "track", "userId": "u-1", "event": "enveloped", "timestamp": at.isoformat()},
        {
            "type": "track",
            "userId": "u-1",
            "event": "own",
            "timestamp": at.isoformat(),
            "sentAt": now.isoformat(),
        },
    ]

    response = send("batch", {"batch": batch, "sentAt": behind}, gzipped=True)

    assert response.json() == {"accepted": 2, "errors": []}
    moved = Event.objects.get(name="enveloped").occurred_at - at
    kept = Event.objects.get(name="own").occurred_at - at
    assert timedelta(hours=1) <= moved < timedelta(hours=1, seconds=30)
    assert timedelta(0) <= kept < timedelta(seconds=30)


def test_an_invalid_envelope_sent_at_refuses_each_item_naming_it(send):
    response = send("batch", {"batch": tracks(2), "sentAt": "yesterday"})

    assert response.status_code == 200
    errors = response.json()["errors"]
    assert [error["index"] for error in errors] == [0, 1]
    assert all(error["error"].startswith("sentAt: ") for error in errors)
    assert not Event.objects.exists()


def test_the_envelope_context_is_kept_on_each_event_under_the_item_s_own(send):
    library = {"name": "analytics-node", "version": "2.1.0"}
    batch = tracks(2)
    batch[0]["context"] = {"locale": "fr-FR"}
    body = {"batch": batch, "context": {"library": library, "locale": "en-US"}}

    assert send("batch", body, content_type=FORM, gzipped=True).status_code == 200

    contexts = dict(Event.objects.values_list("customer__external_id", "context"))
    assert contexts == {
        "u-0": {"library": library, "locale": "fr-FR"},
        "u-1": {"library": library, "locale": "en-US"},
    }


# --- never a 5xx ---------------------------------------------------------------


BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(gzip.compress, st.binary(max_size=300)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["batch", "type", "sentAt", "context", "writeKey", "userId", "event"]
                )
                | st.text(max_size=5),
                inner,
                max_size=5,
            )
        ),
        max_leaves=20,
    ).map(lambda value: json.dumps(value).encode()),
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=BODIES,
    endpoint=st.sampled_from(["identify", "track", "batch", "page"]),
    encoding=st.sampled_from([None, "gzip", "identity", "deflate"]),
    content_type=st.sampled_from(["application/json", FORM, "text/plain", "multipart/form-data"]),
)
def test_no_body_yields_a_5xx(send, data, endpoint, encoding, content_type):
    response = send(endpoint, raw=data, encoding=encoding, content_type=content_type)

    assert response.status_code < 500, (response.status_code, data, encoding)
    assert set(response.json()) <= {"error", "code", "message", "success", "accepted", "errors"}
