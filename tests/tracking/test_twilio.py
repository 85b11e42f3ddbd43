from xml.etree import ElementTree

import pytest

from apps.messaging.consent import suppression_add
from apps.messaging.models import ConsentRecord, Message, Suppression
from apps.messaging.selectors import consent_state
from apps.tracking import hooks
from apps.tracking.hooks import InboundReply
from apps.tracking.models import Engagement, InboundSms, ProviderEvent

from .conftest import PUBLIC, T0, events_named, inbound_params, status_params, twilio_signature


def twiml_messages(response) -> list[str]:
    assert response["Content-Type"].startswith("text/xml")
    root = ElementTree.fromstring(response.content)  # noqa: S314 - our own answer
    assert root.tag == "Response"
    return [m.text or "" for m in root.findall("Message")]


# --- signatures ---------------------------------------------------------------


def test_a_signed_status_callback_is_stored(post_twilio, make_message):
    message = make_message(channel="sms")

    response = post_twilio("status", status_params(message, "delivered"))

    assert response.status_code == 204
    event = ProviderEvent.objects.get()
    assert (event.provider, event.kind, event.event_id) == (
        "twilio",
        "delivered",
        f"{message.provider_message_id}:delivered",
    )


@pytest.mark.parametrize("kind", ["status", "inbound"])
def test_a_missing_or_wrong_signature_is_403(post_twilio, make_message, kind):
    params = status_params(make_message(channel="sms"), "delivered")

    missing = post_twilio(kind, params, signature="")
    wrong = post_twilio(kind, params, signature=twilio_signature(PUBLIC + "/other", params))
    other_token = post_twilio(
        kind, params, signature=twilio_signature(PUBLIC + f"/webhooks/twilio/{kind}", params, "x")
    )

    assert (missing.status_code, wrong.status_code, other_token.status_code) == (403, 403, 403)
    assert not ProviderEvent.objects.exists() and not InboundSms.objects.exists()


def test_a_tampered_parameter_fails(post_twilio, make_message):
    message = make_message(channel="sms")
    params = status_params(message, "delivered")
    signature = twilio_signature(PUBLIC + "/webhooks/twilio/status", params)

    response = post_twilio("status", {**params, "MessageStatus": "failed"}, signature=signature)

    assert response.status_code == 403


def test_without_an_auth_token_nothing_is_accepted(post_twilio, make_message, settings):
    params = status_params(make_message(channel="sms"), "delivered")
    signature = twilio_signature(PUBLIC + "/webhooks/twilio/status", params)
    settings.TWILIO_AUTH_TOKEN = ""

    response = post_twilio("status", params, signature=signature)

    assert response.status_code == 403
    assert "TWILIO_AUTH_TOKEN" in response.json()["error"]


def test_the_public_url_is_rebuilt_with_the_scheme_the_proxy_reports(
    post_twilio, make_message, settings
):
    # Twilio called https; TLS ended at the proxy, which said so.
    settings.PUBLIC_BASE_URL = "http://tenure.example.com"
    params = status_params(make_message(channel="sms"), "delivered")
    https_signature = twilio_signature(
        "https://tenure.example.com/webhooks/twilio/status?attempt=2", params
    )

    behind_proxy = post_twilio(
        "status?attempt=2", params, signature=https_signature, HTTP_X_FORWARDED_PROTO="https"
    )
    without_header = post_twilio("status?attempt=2", params, signature=https_signature)

    assert behind_proxy.status_code == 204
    assert without_header.status_code == 403


def test_a_callback_without_a_status_is_400(post_twilio):
    response = post_twilio("status", {"MessageSid": "SM1"})

    assert response.status_code == 400
    assert response.json() == {"error": "MessageStatus: missing"}


# --- status callbacks ---------------------------------------------------------


def test_delivered_moves_the_message_and_records_sms_delivered(post_twilio, make_message, process):
    message = make_message(channel="sms")

    post_twilio("status", status_params(message, "sent"))
    post_twilio("status", status_params(message, "delivered"))
    process()

    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED
    assert message.delivered_at is not None
    (event,) = events_named("sms_delivered")
    assert event.properties["message_id"] == message.pk
    assert event.properties["channel"] == "sms"


def test_a_late_sent_never_moves_a_delivered_message_back(post_twilio, make_message, process):
    message = make_message(channel="sms")

    post_twilio("status", status_params(message, "delivered"))
    process()
    post_twilio("status", status_params(message, "sent"))
    post_twilio("status", status_params(message, "queued"))
    process()

    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED


def test_a_repeated_callback_is_stored_and_counted_once(post_twilio, make_message, process):
    message = make_message(channel="sms")

    post_twilio("status", status_params(message, "delivered"))
    post_twilio("status", status_params(message, "delivered"))
    process()

    assert ProviderEvent.objects.count() == 1
    assert Engagement.objects.count() == 1
    assert len(events_named("sms_delivered")) == 1


def test_undelivered_fails_the_message_and_records_sms_failed(post_twilio, make_message, process):
    message = make_message(channel="sms")

    post_twilio("status", status_params(message, "undelivered", ErrorCode="30003"))
    process()

    message.refresh_from_db()
    assert message.status == Message.Status.FAILED
    assert message.error == "undelivered (error 30003)"
    (event,) = events_named("sms_failed")
    assert event.properties["reason"] == "undelivered (error 30003)"
    assert not Suppression.objects.exists()  # unreachable today is not invalid for ever


def test_a_landline_is_suppressed_as_invalid(post_twilio, make_message, process):
    message = make_message(channel="sms")

    post_twilio("status", status_params(message, "failed", ErrorCode="30006"))
    process()

    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "sms",
        message.to_address,
        Suppression.Reason.INVALID,
    )


def test_a_callback_for_an_unknown_sid_is_kept_unmatched(post_twilio, make_message, process):
    message = make_message(channel="sms")
    message.delete()

    response = post_twilio("status", status_params(message, "delivered"))
    process()

    assert response.status_code == 204
    assert ProviderEvent.objects.get().message_id is None
    assert not Engagement.objects.exists()


# --- inbound ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["STOP", "stop", " Stop. ", "STOPALL", "unsubscribe", "Cancel", "END", "quit",
             "revoke", "OPTOUT"],
)  # fmt: skip
def test_stop_keywords_opt_the_number_out(post_twilio, make_customer, body):
    customer = make_customer()

    response = post_twilio("inbound", inbound_params(customer.phone, body))

    assert response.status_code == 200
    assert twiml_messages(response) == []  # Twilio confirms STOP itself
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "sms",
        customer.phone,
        Suppression.Reason.SMS_OPT_OUT,
    )
    assert consent_state(customer.pk, "sms") is False
    record = ConsentRecord.objects.get(customer=customer)
    assert record.source == ConsentRecord.Source.SMS_KEYWORD and record.wording == body
    (event,) = events_named("sms_opted_out")
    assert event.customer_id == customer.pk
    assert InboundSms.objects.get().kind == InboundSms.Kind.OPT_OUT


def test_stop_from_an_unknown_number_still_suppresses_it(post_twilio):
    post_twilio("inbound", inbound_params("+14155550999", "STOP"))

    assert Suppression.objects.get().address == "+14155550999"
    assert not ConsentRecord.objects.exists()


@pytest.mark.parametrize("body", ["START", "yes", "Unstop"])
def test_start_keywords_opt_the_number_back_in(post_twilio, make_customer, body):
    customer = make_customer()
    post_twilio("inbound", inbound_params(customer.phone, "STOP"))

    post_twilio("inbound", inbound_params(customer.phone, body))

    assert Suppression.objects.get().lifted_at is not None
    latest = ConsentRecord.objects.filter(customer=customer).order_by("-id").first()
    assert latest.status == ConsentRecord.Status.GRANTED
    assert len(events_named("sms_opted_in")) == 1


def test_start_never_lifts_a_block_added_for_another_reason(post_twilio, make_customer):
    customer = make_customer()
    suppression_add(
        channel="sms", address=customer.phone, reason=Suppression.Reason.MANUAL, source="admin",
        now=T0,
    )  # fmt: skip

    post_twilio("inbound", inbound_params(customer.phone, "START"))

    assert Suppression.objects.get().lifted_at is None


def test_help_answers_with_the_help_text_and_changes_nothing(post_twilio, make_customer, settings):
    customer = make_customer()

    response = post_twilio("inbound", inbound_params(customer.phone, "help"))

    assert twiml_messages(response) == [settings.SMS_HELP_TEXT]
    assert not Suppression.objects.exists() and not ConsentRecord.objects.exists()
    assert InboundSms.objects.get().kind == InboundSms.Kind.HELP


def test_free_text_is_stored_for_the_admin_and_not_acted_on(post_twilio, make_customer):
    customer = make_customer()

    response = post_twilio("inbound", inbound_params(customer.phone, "What time is the demo?"))

    assert twiml_messages(response) == []
    inbound = InboundSms.objects.get()
    assert (inbound.kind, inbound.customer_id, inbound.needs_review) == (
        InboundSms.Kind.TEXT,
        customer.pk,
        False,
    )
    assert inbound.payload["Body"] == "What time is the demo?"
    assert not Suppression.objects.exists()
    (event,) = events_named("sms_replied")
    assert event.properties["text"] == "What time is the demo?"


@pytest.mark.parametrize(
    "body",
    ["please stop texting me", "Stop sending me these", "remove me from this list",
     "don't text me again", "I want to opt-out"],
)  # fmt: skip
def test_free_text_asking_to_stop_is_flagged_for_review(post_twilio, make_customer, body):
    customer = make_customer()

    post_twilio("inbound", inbound_params(customer.phone, body))

    inbound = InboundSms.objects.get()
    assert inbound.kind == InboundSms.Kind.TEXT and inbound.needs_review
    assert not Suppression.objects.exists()  # a person decides; it is not ignored


def test_a_listener_can_take_a_reply_before_it_is_free_text(post_twilio, make_customer):
    customer = make_customer()
    seen = []

    def take_scores(*, inbound, customer_ids, now):
        seen.append((inbound.body, list(customer_ids)))
        if inbound.body.strip().isdigit():
            return InboundReply(text="Thanks for your answer!")
        return None

    hooks.on_inbound_sms(take_scores)
    try:
        taken = post_twilio("inbound", inbound_params(customer.phone, " 9 "))
        passed = post_twilio("inbound", inbound_params(customer.phone, "hello"))
    finally:
        hooks.remove_listener(take_scores)

    assert twiml_messages(taken) == ["Thanks for your answer!"]
    assert twiml_messages(passed) == []
    first, second = InboundSms.objects.order_by("id")
    assert (first.kind, second.kind) == (InboundSms.Kind.REPLY, InboundSms.Kind.TEXT)
    assert "take_scores" in first.handled_by
    assert seen == [(" 9 ", [customer.pk]), ("hello", [customer.pk])]


def test_keywords_are_never_offered_to_listeners(post_twilio, make_customer):
    customer = make_customer()
    seen = []

    def listener(*, inbound, customer_ids, now):
        seen.append(inbound.body)

    hooks.on_inbound_sms(listener)
    try:
        post_twilio("inbound", inbound_params(customer.phone, "STOP"))
    finally:
        hooks.remove_listener(listener)

    assert seen == []


def test_a_retried_inbound_message_acts_once(post_twilio, make_customer, settings):
    customer = make_customer()
    params = inbound_params(customer.phone, "HELP")

    first = post_twilio("inbound", params)
    again = post_twilio("inbound", params)
    post_twilio("inbound", {**inbound_params(customer.phone, "STOP"), "MessageSid": "SMstop"})
    post_twilio("inbound", {**inbound_params(customer.phone, "STOP"), "MessageSid": "SMstop"})

    assert twiml_messages(first) == twiml_messages(again) == [settings.SMS_HELP_TEXT]
    assert InboundSms.objects.count() == 2
    assert ConsentRecord.objects.count() == 1
    assert len(events_named("sms_opted_out")) == 1


def test_an_inbound_message_without_a_sender_is_400(post_twilio):
    response = post_twilio("inbound", {"MessageSid": "SM1", "Body": "STOP"})

    assert response.status_code == 400
    assert response.json() == {"error": "From: missing"}
    assert not InboundSms.objects.exists()


def test_an_oversize_inbound_body_is_413(post_twilio, settings):
    settings.API_MAX_BODY_BYTES = 200

    response = post_twilio("inbound", inbound_params("+14155550100", "x" * 500))

    assert response.status_code == 413
    assert not InboundSms.objects.exists()


def test_a_reply_a_listener_took_is_still_flagged_when_it_asks_to_stop(post_twilio, make_customer):
    customer = make_customer()

    def take_everything(*, inbound, customer_ids, now):
        return InboundReply(text="Thanks!")

    hooks.on_inbound_sms(take_everything)
    try:
        post_twilio("inbound", inbound_params(customer.phone, "3. Stop texting me"))
    finally:
        hooks.remove_listener(take_everything)

    inbound = InboundSms.objects.get()
    assert inbound.kind == InboundSms.Kind.REPLY and inbound.needs_review
