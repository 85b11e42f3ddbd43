"""The provider webhooks, attacked with validly signed bodies of any shape:
SendGrid's event webhook (signed with a key pair made here, as SendGrid signs)
and Twilio's status and inbound callbacks (signed with the SDK's
RequestValidator for the public URL). A valid signature gets the body past
the door, so what follows is the parser's and the store's: never a 5xx, and
a refused post (4xx) writes nothing."""

import json
import math
import time
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from hypothesis import example, given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from apps.messaging.models import Category, Channel, Message
from tests.attack.conftest import rolled_back, shows
from tests.attack.public import changed, row_counts
from tests.tracking.conftest import SendGridSigner

PUBLIC = "https://tenure.example.com"
TWILIO_TOKEN = "fuzz-twilio-auth-token"

# Text that can travel in a signed body (no lone surrogates: they cannot be
# encoded, so nobody can sign them), NUL and control characters included.
texts = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    st.sampled_from(["\x00", "a\x00b", "9" * 400, "", " ", "+15005550006", "STOP", "delivered"]),
)
numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 10**30, 253402300800, -62135596801, 1.5e9]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=12,
)
EVENT_KEYS = ["event", "email", "timestamp", "sg_event_id", "sg_message_id",
              "tenure_message_id", "url", "reason", "type", "useragent", "ip", "category",
              "url_offset", "sg_machine_open", "status", "response", "attempt"]  # fmt: skip
EVENTS = ["processed", "delivered", "open", "click", "bounce", "dropped", "deferred",
          "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"]  # fmt: skip


def deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def sendgrid_bodies(draw, message_id: int, provider_id: str) -> bytes:
    """A JSON body: mostly a list of events, each with some of the real keys
    (plausible values for our message, or anything), sometimes anything."""

    def event():
        item = {}
        for key in draw(st.lists(st.sampled_from(EVENT_KEYS), max_size=8, unique=True)):
            plausible = {
                "event": st.sampled_from(EVENTS),
                "email": st.just("person@example.com"),
                "timestamp": st.integers(0, 86400).map(lambda ago: int(time.time()) - ago),
                "sg_event_id": st.text(min_size=1, max_size=20),
                "sg_message_id": st.just(f"{provider_id}.filterdrecv-1"),
                "tenure_message_id": st.just(str(message_id)),
            }.get(key, json_values)
            item[key] = draw(st.one_of(plausible, json_values))
        return item

    shape = draw(st.sampled_from(["events", "events", "events", "any", "deep", "huge number"]))
    if shape == "any":
        return json.dumps(draw(json_values)).encode()
    if shape == "deep":
        return json.dumps([{"event": "open", "nested": deep(draw(st.integers(50, 900)))}]).encode()
    events = [event() for _ in range(draw(st.integers(0, 4)))]
    body = json.dumps(events).encode()  # NaN and Infinity come out as such (allow_nan)
    if shape == "huge number":
        body = body.replace(b"[", b'[{"event": "open", "timestamp": 1e400}, ', 1)
    return body


@pytest.fixture
def sent_messages(make_customer):
    customer, now = make_customer(), timezone.now()
    email = Message.objects.create(
        customer=customer, channel=Channel.EMAIL, category=Category.MARKETING,
        to_address=customer.email, idempotency_key="fuzz:email", status=Message.Status.SENT,
        created_at=now, sent_at=now,
        provider="sendgrid", provider_message_id="sgfuzzid",
    )  # fmt: skip
    sms = Message.objects.create(
        customer=customer, channel=Channel.SMS, category=Category.MARKETING,
        to_address=customer.phone, idempotency_key="fuzz:sms", status=Message.Status.SENT,
        created_at=now, sent_at=now,
        provider="twilio", provider_message_id="SM" + "f" * 32, text="Hi. Reply STOP to opt out.",
    )  # fmt: skip
    return email, sms


def test_a_signed_sendgrid_post_of_any_shape_is_never_5xx_and_a_refusal_writes_nothing(
    client, settings, sent_messages
):
    signer = SendGridSigner()
    settings.SENDGRID_WEBHOOK_PUBLIC_KEY = signer.public_key
    email, _ = sent_messages

    @example(body=b'[{"event": "open", "timestamp": 1e400}]')
    @example(body=b'[{"event": "open", "timestamp": NaN, "email": "a\\u0000b"}]')
    @example(body=json.dumps([{"event": "open", "nested": deep(900)}]).encode())
    @given(body=sendgrid_bodies(email.pk, email.provider_message_id))
    def attack(body):
        with shows(body=body), rolled_back():
            before = row_counts()
            response = client.post(
                "/webhooks/sendgrid", data=body, content_type="application/json",
                **signer.headers(body),
            )  # fmt: skip
            status = response.status_code
            assert status < 500, f"POST /webhooks/sendgrid {body[:2000]!r} -> {status}"
            if 400 <= status < 500:
                assert not changed(before, row_counts()), (
                    f"POST /webhooks/sendgrid {body[:2000]!r} -> {status} but wrote "
                    f"{changed(before, row_counts())}"
                )

    attack()


TWILIO_KEYS = ["MessageSid", "MessageStatus", "SmsStatus", "To", "From", "Body", "AccountSid",
               "ErrorCode", "ErrorMessage", "NumMedia", "NumSegments", "OptOutType",
               "RawDlrDoneDate", "ApiVersion"]  # fmt: skip


@st.composite
def twilio_forms(draw, sms: Message) -> tuple[str, dict[str, str]]:
    kind = draw(st.sampled_from(["status", "inbound"]))
    plausible = {
        "MessageSid": st.sampled_from([sms.provider_message_id, "SM" + "0" * 32]),
        "MessageStatus": st.sampled_from(["queued", "sent", "delivered", "undelivered", "failed",
                                          "read", "canceled"]),
        "From": st.sampled_from([sms.to_address, "+15005550006", "not a number"]),
        "Body": st.sampled_from(["STOP", "start", "help", "please stop", "7", "10 great"]),
        "ErrorCode": st.sampled_from(["30003", "21610", "x", ""]),
    }  # fmt: skip
    params = {}
    for key in draw(st.lists(st.sampled_from(TWILIO_KEYS), max_size=8, unique=True)):
        params[key] = draw(st.one_of(plausible.get(key, texts), texts))
    params.update(draw(st.dictionaries(texts.filter(bool), texts, max_size=2)))
    return kind, params


def test_a_signed_twilio_callback_of_any_shape_is_never_5xx_and_a_refusal_writes_nothing(
    client, settings, sent_messages
):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    _, sms = sent_messages
    validator = RequestValidator(TWILIO_TOKEN)

    @example(
        form=(
            "status",
            {"MessageSid": sms.provider_message_id, "MessageStatus": "sent", "SmsStatus": "\x00"},
        )
    )
    @example(
        form=(
            "inbound",
            {
                "MessageSid": "SM" + "1" * 32,
                "From": "+15005550001",
                "To": "+15005550006",
                "Body": "a\x00b",
            },
        )
    )
    @given(form=twilio_forms(sms))
    def attack(form):
        kind, params = form
        path = f"/webhooks/twilio/{kind}"
        with shows(path=path, params=params), rolled_back():
            before = row_counts()
            response = client.post(
                path,
                data=urlencode(params),
                content_type="application/x-www-form-urlencoded",
                HTTP_X_TWILIO_SIGNATURE=validator.compute_signature(PUBLIC + path, params),
            )
            status = response.status_code
            assert status < 500, f"POST {path} {params!r} -> {status}"
            if 400 <= status < 500:
                assert not changed(before, row_counts()), (
                    f"POST {path} {params!r} -> {status} but wrote {changed(before, row_counts())}"
                )

    attack()


def test_a_nan_is_not_a_number_a_json_parser_may_accept():
    # Documents why the bodies above carry NaN: json.dumps writes it, and
    # Python's json.loads reads it back; a view must refuse it, not store it.
    assert math.isnan(json.loads(json.dumps(float("nan"))))
