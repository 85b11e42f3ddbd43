"""The providers' webhooks against odd input (RELIABILITY.md 27, 31): a
signed body with NUL characters, invalid UTF-8 or percent-encoding, NaN,
1e400, lone surrogates, deep nesting or over-long fields is answered 4xx (or,
in a SendGrid batch, only that item is refused), never 500, and nothing is
left half-written."""

import json

import pytest
from django.http import QueryDict

from apps.messaging.models import Suppression
from apps.tracking.models import InboundSms, ProviderEvent

from .conftest import PUBLIC, inbound_params, sg_event, status_params, twilio_signature

pytestmark = pytest.mark.django_db


# --- Twilio -------------------------------------------------------------------


@pytest.fixture
def post_twilio_raw(client):
    """A raw form body, signed over the parameters as Django reads them (what
    a request relayed by Twilio with the same text would carry)."""

    def post(kind: str, raw: bytes):
        path = f"/webhooks/twilio/{kind}"
        signature = twilio_signature(PUBLIC + path, QueryDict(raw, encoding="utf-8"))
        return client.post(
            path,
            data=raw,
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=signature,
        )

    return post


def test_an_inbound_text_with_a_nul_is_stored_without_it(post_twilio, make_customer):
    customer = make_customer()
    params = inbound_params(customer.phone, "Hello\x00 there", NumMedia="0\x00")

    response = post_twilio("inbound", params)

    assert response.status_code == 200
    inbound = InboundSms.objects.get()
    assert inbound.body == "Hello there"
    assert inbound.payload["Body"] == "Hello there"
    assert inbound.payload["NumMedia"] == "0"


def test_a_stop_with_a_nul_inside_still_opts_the_number_out(post_twilio, make_customer):
    customer = make_customer()

    response = post_twilio("inbound", inbound_params(customer.phone, "ST\x00OP"))

    assert response.status_code == 200
    assert InboundSms.objects.get().kind == InboundSms.Kind.OPT_OUT


@pytest.mark.parametrize("body", ["STOP", "START"])
def test_a_keyword_from_a_sender_that_is_no_phone_number_is_kept_for_review(post_twilio, body):
    response = post_twilio("inbound", inbound_params("not a number", body))

    assert response.status_code == 200
    inbound = InboundSms.objects.get()
    assert (inbound.body, inbound.kind, inbound.needs_review) == (
        body,
        InboundSms.Kind.TEXT,
        body == "STOP",
    )
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"MessageSid=SMbad1&From=%2B14155550100&Body=caf%E9+%ED%A0%80+%zz%&To=%2B1500",
        b"MessageSid=SMbad1&From=%2B14155550100&Body=%FF%FE%00%00",
    ],
)
def test_an_inbound_text_with_broken_encoding_is_stored_readably(post_twilio_raw, raw):
    response = post_twilio_raw("inbound", raw)

    assert response.status_code == 200
    body = InboundSms.objects.get().body
    assert "\x00" not in body
    body.encode("utf-8")  # no lone surrogate


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MessageSid", "SM" + "1" * 100),
        ("MessageSid", "SM\x00bad"),
        ("MessageSid", "SM bad/../x"),
        ("From", "+1" + "5" * 40),
        ("To", "+1" + "5" * 40),
        ("Body", "x" * 5000),
    ],
)
def test_an_inbound_text_with_an_invalid_field_is_400_naming_it(post_twilio, field, value):
    params = inbound_params("+14155550100", "hello")
    params[field] = value

    response = post_twilio("inbound", params)

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}: ")
    assert not InboundSms.objects.exists()


@pytest.mark.parametrize("field", ["MessageSid", "From"])
def test_an_inbound_text_missing_a_field_is_400_naming_it(post_twilio, field):
    params = inbound_params("+14155550100", "hello")
    del params[field]

    response = post_twilio("inbound", params)

    assert response.status_code == 400
    assert response.json()["error"] == f"{field}: missing"


def test_a_bad_signature_stays_403_whatever_the_body(post_twilio):
    params = inbound_params("+14155550100", "x\x00" * 10, MessageSid="SM\x00")

    response = post_twilio("inbound", params, signature="bad")

    assert response.status_code == 403
    assert not InboundSms.objects.exists()


def test_a_status_callback_with_nul_characters_is_stored_without_them(post_twilio, make_message):
    message = make_message(channel="sms")
    params = status_params(message, "delivered", ErrorMessage="odd\x00text", Extra="\x00")

    response = post_twilio("status", params)

    assert response.status_code == 204
    event = ProviderEvent.objects.get()
    assert event.payload["ErrorMessage"] == "oddtext"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("MessageSid", "SM" + "1" * 100),
        ("MessageSid", "SM\x00"),
        ("MessageStatus", "delivered" * 10),
        ("MessageStatus", "deli\x00vered"),
        ("To", "+1" + "5" * 40),
    ],
)
def test_a_status_callback_with_an_invalid_field_is_400_naming_it(
    post_twilio, make_message, field, value
):
    message = make_message(channel="sms")
    params = status_params(message, "delivered")
    params[field] = value

    response = post_twilio("status", params)

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}: ")
    assert not ProviderEvent.objects.exists()


def test_a_status_callback_with_broken_encoding_is_not_a_500(post_twilio_raw, make_message):
    message = make_message(channel="sms")
    raw = (
        f"MessageSid={message.provider_message_id}&MessageStatus=delivered"
        "&ErrorMessage=%ED%A0%80%zz%FF%00"
    ).encode()

    response = post_twilio_raw("status", raw)

    assert response.status_code == 204
    assert ProviderEvent.objects.get().kind == "delivered"


# --- SendGrid -----------------------------------------------------------------


def _body(*items: str) -> bytes:
    """A JSON array written by hand (json.dumps cannot write NaN-free odd items)."""
    return ("[" + ",".join(items) + "]").encode()


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("odd", "problem"),
    [
        ('"useragent": NaN', "NaN"),
        ('"a\\u0000b": {"c\\ud800": 1}', "surrogate"),
        ('"a\\u0000b": [NaN]', "ab[0]: NaN"),
        ('"useragent": Infinity', "Infinity"),
        ('"useragent": -Infinity', "Infinity"),
        ('"useragent": 1e400', "out of range"),
        ('"useragent": ' + "9" * 5000, "out of range"),
        ('"useragent": "\\ud800 lone"', "surrogate"),
        ('"useragent": ' + _deep(100), "nested"),
        ('"useragent": ' + _deep(5000), "nested"),
        ('"useragent": "' + "x" * 20000 + '"', "too long"),
        ('"tenure_message_id": 99999999999999999999999', "out of range"),
        ('"sg_event_id": "' + "e" * 300 + '"', ""),
        ('"timestamp": -5', ""),
        ('"timestamp": "yesterday"', ""),
        ('"timestamp": 1e300', ""),
        ('"event": null', ""),
        ('"email": ["x"]', ""),
    ],
)
def test_one_odd_event_is_refused_and_the_rest_of_the_batch_stored(
    post_sendgrid, make_message, process, odd, problem
):
    message = make_message()
    good = sg_event("delivered", message)
    bad = sg_event("open", message, sg_event_id="odd-1")
    bad_text = json.dumps(bad)[:-1] + ", " + odd + "}"

    response = post_sendgrid(raw=_body(json.dumps(good), bad_text))
    process()

    assert response.status_code == 200, response.content[:500]
    assert response.json() == {"received": 2, "stored": 2, "duplicates": 0, "refused": 1}
    message.refresh_from_db()
    assert message.status == "delivered"
    assert ProviderEvent.objects.filter(event_id=good["sg_event_id"], error="").exists()
    if problem:
        refused = ProviderEvent.objects.exclude(event_id=good["sg_event_id"]).get()
        assert problem in refused.error


@pytest.mark.parametrize("item", ["1", '"text"', "null", "[1, 2]", "true"])
def test_an_item_that_is_not_an_object_is_refused_alone(post_sendgrid, make_message, item):
    message = make_message()
    good = sg_event("delivered", message)

    response = post_sendgrid(raw=_body(json.dumps(good), item))

    assert response.status_code == 200
    assert response.json()["refused"] == 1
    assert response.json()["stored"] == 2
    assert ProviderEvent.objects.filter(event_id=good["sg_event_id"], error="").exists()


def test_a_refused_item_is_stored_once_when_the_batch_comes_again(post_sendgrid, make_message):
    message = make_message()
    body = _body(json.dumps(sg_event("delivered", message)), '{"event": NaN}')

    first = post_sendgrid(raw=body)
    again = post_sendgrid(raw=body)

    assert first.json()["stored"] == 2
    assert again.json() == {"received": 2, "stored": 0, "duplicates": 2, "refused": 0}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b'{"event": "open"}',
        b"\xff\xfe",
        b"[" * 100000,
        b'[{"event": "open"}',
        b"NaN",
    ],
)
def test_a_body_that_is_not_a_json_array_is_400(post_sendgrid, raw):
    response = post_sendgrid(raw=raw)

    assert response.status_code == 400
    assert response.json()["error"]
    assert not ProviderEvent.objects.exists()


def test_nul_escapes_are_removed_and_surrogate_pairs_kept(post_sendgrid, make_message):
    message = make_message()
    item = json.dumps(sg_event("open", message, sg_event_id="odd-2", useragent="A\x00B \U0001f600"))
    assert "\\u0000" in item and "\\ud83d\\ude00" in item

    response = post_sendgrid(raw=_body(item))

    assert response.json()["refused"] == 0
    assert ProviderEvent.objects.get().payload["useragent"] == "AB \U0001f600"


def test_an_event_with_flat_nested_fields_is_stored_as_sent(post_sendgrid, make_message):
    message = make_message()
    item = sg_event("delivered", message, pool={"name": "main", "id": 210}, category=["a", "b"])

    response = post_sendgrid([item])

    assert response.json()["refused"] == 0
    stored = ProviderEvent.objects.get().payload
    assert (stored["pool"], stored["category"]) == ({"name": "main", "id": 210}, ["a", "b"])
