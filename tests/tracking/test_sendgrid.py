import json
from datetime import timedelta

import pytest
import time_machine

from apps.messaging.consent import consent_record
from apps.messaging.models import ConsentRecord, Message, Suppression
from apps.messaging.selectors import consent_state
from apps.tracking.models import Engagement, ProviderEvent

from .conftest import T0, events_named, sg_event

# --- verification -------------------------------------------------------------


def test_a_signed_batch_is_stored_and_answered_with_counts(post_sendgrid, make_message):
    message = make_message()

    response = post_sendgrid([sg_event("delivered", message), sg_event("open", message)])

    assert response.status_code == 200
    assert response.json() == {"received": 2, "stored": 2, "duplicates": 0, "refused": 0}
    assert ProviderEvent.objects.filter(processed_at__isnull=True).count() == 2


def test_a_missing_signature_is_refused_with_403(client, sendgrid_signer):
    response = client.post("/webhooks/sendgrid", data=b"[]", content_type="application/json")

    assert response.status_code == 403
    assert "missing" in response.json()["error"]


def test_a_tampered_byte_fails_verification(post_sendgrid, sendgrid_signer, make_message):
    body = json.dumps([sg_event("delivered", make_message())]).encode()
    headers = sendgrid_signer.headers(body)
    tampered = body.replace(b'"delivered"', b'"dElivered"')

    response = post_sendgrid(raw=tampered, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"error": "invalid signature"}
    assert not ProviderEvent.objects.exists()


def test_a_signature_over_another_timestamp_fails(post_sendgrid, sendgrid_signer):
    body = b"[]"
    headers = sendgrid_signer.headers(body, timestamp="1700000000")
    headers["HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP"] = "1700000001"

    assert post_sendgrid(raw=body, headers=headers).status_code == 403


@pytest.mark.parametrize("signature", ["not base64 at all!", "c2lnbmF0dXJl", "=="])
def test_a_malformed_signature_is_403_not_500(post_sendgrid, signature):
    headers = {
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": signature,
        "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": "1700000000",
    }

    assert post_sendgrid(raw=b"[]", headers=headers).status_code == 403


def test_another_key_s_signature_fails(post_sendgrid, settings):
    from .conftest import SendGridSigner

    other = SendGridSigner()
    body = b"[]"

    assert post_sendgrid(raw=body, headers=other.headers(body)).status_code == 403


@pytest.mark.parametrize("key", ["", "bm90IGEga2V5"])
def test_without_a_usable_public_key_everything_is_refused(post_sendgrid, settings, key):
    settings.SENDGRID_WEBHOOK_PUBLIC_KEY = key

    response = post_sendgrid(raw=b"[]")

    assert response.status_code == 403
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["error"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"event": "open"}', "body must be a JSON array of events, got dict"),
        (b"\xff\xfe", "body is not JSON"),
    ],
)
def test_a_signed_but_malformed_body_is_400_naming_the_problem(post_sendgrid, raw, problem):
    response = post_sendgrid(raw=raw)

    assert response.status_code == 400
    assert response.json()["error"].startswith(problem)
    assert not ProviderEvent.objects.exists()


def test_an_event_missing_its_fields_is_kept_with_its_error_and_the_batch_accepted(
    post_sendgrid, make_message, process
):
    message = make_message()
    broken = {"event": "delivered", "email": "x@example.com", "sg_event_id": "broken-1"}

    response = post_sendgrid([broken, sg_event("delivered", message)])
    process()

    assert response.json()["refused"] == 1
    bad = ProviderEvent.objects.get(event_id="broken-1")
    assert bad.error == "refused: timestamp: Field required"
    assert bad.processed_at is not None
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED


def test_an_oversize_body_is_refused_before_it_is_read(db, client, settings, sendgrid_signer):
    settings.API_MAX_BODY_BYTES = 1000
    body = json.dumps([{"event": "open", "pad": "x" * 2000}]).encode()

    response = client.post(
        "/webhooks/sendgrid",
        data=body,
        content_type="application/json",
        **sendgrid_signer.headers(body),
    )

    assert response.status_code == 413
    assert not ProviderEvent.objects.exists()


# --- replays -------------------------------------------------------------------


def _signed_at(signer, body: bytes, at) -> dict:
    return signer.headers(body, timestamp=str(int(at.timestamp())))


def test_a_post_signed_more_than_the_window_ago_is_refused_as_a_replay(
    post_sendgrid, sendgrid_signer, make_message, settings
):
    settings.SENDGRID_WEBHOOK_MAX_AGE_S = 25 * 3600
    body = json.dumps([sg_event("delivered", make_message())]).encode()
    signed = _signed_at(sendgrid_signer, body, T0)

    with time_machine.travel(T0 + timedelta(hours=25, seconds=1), tick=False):
        response = post_sendgrid(raw=body, headers=signed)

    assert response.status_code == 403
    assert response.json()["error"].startswith("X-Twilio-Email-Event-Webhook-Timestamp: signed")
    assert not ProviderEvent.objects.exists()


def test_a_retry_a_day_later_with_its_first_timestamp_is_taken_and_stored_once(
    post_sendgrid, sendgrid_signer, make_message, process
):
    """SendGrid retries for 24 hours; a retry may carry its first timestamp."""
    message = make_message()
    body = json.dumps([sg_event("delivered", message)]).encode()
    signed = _signed_at(sendgrid_signer, body, T0)

    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        first = post_sendgrid(raw=body, headers=signed)
    with time_machine.travel(T0 + timedelta(hours=24), tick=False):
        retry = post_sendgrid(raw=body, headers=signed)
    process()

    assert first.json()["stored"] == 1
    assert retry.status_code == 200
    assert retry.json() == {"received": 1, "stored": 0, "duplicates": 1, "refused": 0}
    assert ProviderEvent.objects.count() == 1
    assert len(events_named("email_delivered")) == 1


def test_a_post_signed_in_the_future_beyond_clock_skew_is_refused(post_sendgrid, sendgrid_signer):
    body = b"[]"
    with time_machine.travel(T0, tick=False):
        near = post_sendgrid(
            raw=body, headers=_signed_at(sendgrid_signer, body, T0 + timedelta(minutes=4))
        )
        far = post_sendgrid(
            raw=body, headers=_signed_at(sendgrid_signer, body, T0 + timedelta(minutes=6))
        )

    assert near.status_code == 200
    assert far.status_code == 403
    assert "in the future" in far.json()["error"]


@pytest.mark.parametrize(
    "timestamp", ["yesterday", "-5", "1e9", "9" * 40, "\u0661\u0667" + "\u0660" * 8]
)
def test_a_timestamp_that_is_not_unix_seconds_is_403(post_sendgrid, sendgrid_signer, timestamp):
    body = b"[]"
    signature = sendgrid_signer.headers(body, timestamp=timestamp)

    response = post_sendgrid(raw=body, headers=signature)

    assert response.status_code == 403
    assert "Timestamp" in response.json()["error"]


# --- storing once -------------------------------------------------------------


def test_duplicate_events_are_stored_once(post_sendgrid, make_message, process):
    message = make_message()
    delivered = sg_event("delivered", message)

    first = post_sendgrid([delivered, delivered])
    again = post_sendgrid([delivered])
    process()

    assert first.json()["stored"] == 1 and first.json()["duplicates"] == 1
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1, "refused": 0}
    assert ProviderEvent.objects.count() == 1
    assert Engagement.objects.count() == 1
    assert len(events_named("email_delivered")) == 1


# --- matching -----------------------------------------------------------------


def test_events_match_our_custom_arg_first(post_sendgrid, make_message, process):
    message = make_message()
    other = make_message()
    # The custom arg names `message`, whatever the provider id says.
    item = sg_event("delivered", message, sg_message_id=f"{other.provider_message_id}.x")

    post_sendgrid([item])
    process()

    assert ProviderEvent.objects.get().message_id == message.pk


def test_without_our_custom_arg_events_match_the_send_id(post_sendgrid, make_message, process):
    message = make_message()
    item = sg_event("bounce", message, reason="550 no such user")
    del item["tenure_message_id"]

    post_sendgrid([item])
    process()

    assert ProviderEvent.objects.get().message_id == message.pk
    message.refresh_from_db()
    assert message.status == Message.Status.BOUNCED


def test_events_of_unknown_messages_are_kept_unmatched(post_sendgrid, process):
    item = sg_event("delivered", None)
    item["tenure_message_id"] = "999999"

    response = post_sendgrid([item])
    result = process()

    assert response.status_code == 200
    event = ProviderEvent.objects.get()
    assert event.message_id is None and event.processed_at is not None and event.error == ""
    assert result.unmatched == 1
    assert not Engagement.objects.exists()


def test_a_bounce_of_an_unknown_message_still_suppresses_its_address(post_sendgrid, process):
    post_sendgrid([sg_event("bounce", None, email="Gone@Example.com", reason="550")])
    process()

    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "email",
        "gone@example.com",
        Suppression.Reason.BOUNCE,
    )


# --- what events do -----------------------------------------------------------


def test_delivered_open_and_click_move_the_message_and_record_events(
    post_sendgrid, make_message, process
):
    message = make_message()
    at = T0 + timedelta(minutes=1)
    post_sendgrid(
        [
            sg_event("processed", message),
            sg_event("delivered", message),
            sg_event("open", message, timestamp=int((at + timedelta(minutes=5)).timestamp())),
            sg_event(
                "click",
                message,
                url="https://example.com/pricing",
                timestamp=int((at + timedelta(minutes=6)).timestamp()),
            ),
        ]
    )

    process()

    message.refresh_from_db()
    assert message.status == Message.Status.CLICKED
    assert message.delivered_at == at
    assert message.opened_at == at + timedelta(minutes=5)
    assert message.clicked_at == at + timedelta(minutes=6)
    names = [e.name for e in events_named("email_delivered") + events_named("email_opened")]
    assert names == ["email_delivered", "email_opened"]
    (clicked,) = events_named("email_clicked")
    assert clicked.properties["url"] == "https://example.com/pricing"
    assert clicked.properties["source"] == "sendgrid"
    assert clicked.properties["template"] == "welcome"


def test_out_of_order_events_never_move_a_message_backwards(post_sendgrid, make_message, process):
    message = make_message()
    at = T0 + timedelta(minutes=1)
    post_sendgrid([sg_event("open", message, timestamp=int((at + timedelta(hours=1)).timestamp()))])
    process()
    # The delivery report arrives later (SendGrid batches): delivered stays behind.
    post_sendgrid([sg_event("delivered", message), sg_event("processed", message)])
    process()

    message.refresh_from_db()
    assert message.status == Message.Status.OPENED
    assert message.delivered_at == at  # still recorded


def test_an_apple_privacy_open_is_a_machine_open(post_sendgrid, make_message, process):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)

    post_sendgrid([sg_event("open", message, sg_machine_open=True)])
    process()

    hit = Engagement.objects.get()
    assert hit.machine and hit.machine_reason == "provider: machine open"
    message.refresh_from_db()
    assert message.status == Message.Status.DELIVERED and message.opened_at is None
    assert not events_named("email_opened")


def test_a_click_right_after_delivery_reported_in_the_same_batch_is_a_machine_click(
    post_sendgrid, make_message, process
):
    message = make_message()
    delivered = int((T0 + timedelta(minutes=1)).timestamp())
    post_sendgrid(
        [
            sg_event("click", message, url="https://example.com/", timestamp=delivered + 2),
            sg_event("delivered", message, timestamp=delivered),
        ]
    )

    process()

    click = Engagement.objects.get(kind="click")
    assert click.machine and "after delivery" in click.machine_reason
    assert not events_named("email_clicked")


def test_a_scanner_user_agent_on_a_click_event_is_a_machine_click(
    post_sendgrid, make_message, process
):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)

    post_sendgrid([sg_event("click", message, url="https://e.com/", useragent="Proofpoint/1")])
    process()

    assert Engagement.objects.get().machine_reason == "scanner user agent (proofpoint)"


@pytest.mark.parametrize(
    ("event", "fields", "reason", "status", "customer_event"),
    [
        ("bounce", {"reason": "550 5.1.1 unknown user", "status": "5.1.1"}, "bounce",
         Message.Status.BOUNCED, "email_bounced"),
        ("dropped", {"reason": "Bounced Address"}, "bounce", Message.Status.BOUNCED,
         "email_bounced"),
        ("dropped", {"reason": "Invalid"}, "invalid", Message.Status.BOUNCED, "email_bounced"),
        ("spamreport", {}, "complaint", Message.Status.COMPLAINED, "email_complained"),
        ("unsubscribe", {}, "unsubscribe", Message.Status.DELIVERED, "unsubscribed"),
        ("group_unsubscribe", {"asm_group_id": 4}, "unsubscribe", Message.Status.DELIVERED,
         "unsubscribed"),
    ],
)  # fmt: skip
def test_bounces_drops_complaints_and_unsubscribes_suppress_the_address(
    post_sendgrid, make_message, process, event, fields, reason, status, customer_event
):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)

    post_sendgrid([sg_event(event, message, **fields)])
    process()

    suppression = Suppression.objects.get(channel="email", address=message.to_address)
    assert suppression.reason == reason and suppression.lifted_at is None
    message.refresh_from_db()
    assert message.status == status
    (recorded,) = events_named(customer_event)
    assert recorded.customer_id == message.customer_id
    assert recorded.properties["journey"] == "onboarding"


def test_a_bounce_records_why_on_the_message_and_the_event(post_sendgrid, make_message, process):
    message = make_message()

    post_sendgrid([sg_event("bounce", message, reason="550 no such user", status="5.1.1")])
    process()

    message.refresh_from_db()
    assert message.failed_at is not None
    assert "550 no such user" in message.error
    assert "550 no such user" in events_named("email_bounced")[0].properties["reason"]


def test_a_blocked_bounce_is_recorded_but_does_not_suppress(post_sendgrid, make_message, process):
    message = make_message()

    post_sendgrid([sg_event("bounce", message, type="blocked", reason="421 try later")])
    process()

    assert not Suppression.objects.exists()
    assert Engagement.objects.get().kind == "bounce"


def test_an_unsubscribe_revokes_email_consent_and_cancels_waiting_marketing(
    post_sendgrid, make_message, process
):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)
    waiting = make_message(customer=message.customer, status=Message.Status.DEFERRED, sent_at=None)

    post_sendgrid([sg_event("unsubscribe", message)])
    process()

    assert consent_state(message.customer_id, "email") is False
    record = ConsentRecord.objects.get(customer=message.customer)
    assert record.source == ConsentRecord.Source.PROVIDER
    waiting.refresh_from_db()
    assert waiting.status == Message.Status.SUPPRESSED


def test_a_group_resubscribe_lifts_only_the_unsubscribe_the_provider_reported(
    post_sendgrid, make_message, process
):
    message = make_message(status=Message.Status.DELIVERED, delivered_at=T0)
    post_sendgrid([sg_event("group_unsubscribe", message)])
    process()

    later = int((T0 + timedelta(days=1)).timestamp())
    post_sendgrid([sg_event("group_resubscribe", message, timestamp=later)])
    process(T0 + timedelta(days=2))

    suppression = Suppression.objects.get()
    assert suppression.lifted_at is not None
    assert consent_state(message.customer_id, "email") is True
    assert len(events_named("email_resubscribed")) == 1


def test_a_group_resubscribe_never_lifts_a_bounce(post_sendgrid, make_message, process):
    message = make_message()
    post_sendgrid([sg_event("bounce", message)])
    process()

    post_sendgrid([sg_event("group_resubscribe", message)])
    process()

    assert Suppression.objects.get().lifted_at is None


def test_deferred_is_recorded_without_an_event(post_sendgrid, make_message, process):
    message = make_message()

    post_sendgrid([sg_event("deferred", message, response="451 try again")])
    process()

    assert Engagement.objects.get().kind == "deferred"
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def test_a_whole_batch_of_a_thousand_events_is_stored_and_processed(
    post_sendgrid, make_message, process
):
    messages = [make_message() for _ in range(50)]
    items = [sg_event("delivered", m) for m in messages] + [
        sg_event("open", m, timestamp=int((T0 + timedelta(hours=1, seconds=i)).timestamp()))
        for m in messages
        for i in range(19)
    ]

    response = post_sendgrid(items)
    result = process()

    assert response.json()["stored"] == 1000
    assert result.provider_events == 1000
    assert Message.objects.filter(status=Message.Status.OPENED).count() == 50
    assert len(events_named("email_opened")) == 50
    assert len(events_named("email_delivered")) == 50


def test_many_bounces_in_a_batch_suppress_each_address_and_cancel_its_waiting_messages(
    post_sendgrid, make_message, process
):
    bounced = [make_message() for _ in range(3)]
    complained = make_message()
    waiting = [
        make_message(customer=m.customer, status=Message.Status.QUEUED, sent_at=None,
                     category=category)
        for m, category in zip([*bounced, complained], ["marketing", "transactional"] * 2,
                               strict=True)
    ]  # fmt: skip
    untouched = make_message(status=Message.Status.QUEUED, sent_at=None)

    post_sendgrid(
        [sg_event("bounce", m, reason="550") for m in bounced]
        + [sg_event("spamreport", complained)]
    )
    process()

    assert sorted(Suppression.objects.values_list("address", "reason")) == sorted(
        [(m.to_address, "bounce") for m in bounced] + [(complained.to_address, "complaint")]
    )
    for message in waiting:
        message.refresh_from_db()
    assert [m.status for m in waiting] == [Message.Status.SUPPRESSED] * 4
    assert [m.reason for m in waiting] == ["cancelled: bounced"] * 3 + ["cancelled: spam complaint"]
    untouched.refresh_from_db()
    assert untouched.status == Message.Status.QUEUED


def test_many_unsubscribes_in_a_batch_revoke_each_customer_once_and_cancel_only_marketing(
    post_sendgrid, make_message, make_customer, process
):
    twice = make_message()  # unsubscribed from two addresses in the same batch
    other_address = make_message(customer=twice.customer, to_address="old@example.com")
    already = make_message()
    consent_record(
        customer=already.customer_id, channel="email", status=ConsentRecord.Status.REVOKED,
        source=ConsentRecord.Source.PREFERENCES, recorded_at=T0,
    )  # fmt: skip
    marketing = make_message(customer=twice.customer, status=Message.Status.QUEUED, sent_at=None)
    transactional = make_message(
        customer=twice.customer, status=Message.Status.QUEUED, sent_at=None,
        category="transactional",
    )  # fmt: skip

    post_sendgrid(
        [sg_event("unsubscribe", m) for m in (twice, other_address, already)]
        + [sg_event("group_unsubscribe", twice, asm_group_id=4)]
    )
    result = process()

    assert sorted(Suppression.objects.values_list("address", "reason", "source")) == sorted(
        (m.to_address, "unsubscribe", "provider") for m in (twice, other_address, already)
    )
    revoked = ConsentRecord.objects.filter(status=ConsentRecord.Status.REVOKED)
    assert sorted(revoked.values_list("customer_id", "source")) == sorted(
        [(twice.customer_id, "provider"), (already.customer_id, "preferences")]
    )
    assert consent_state(twice.customer_id, "email") is False
    marketing.refresh_from_db()
    transactional.refresh_from_db()
    assert marketing.status == Message.Status.SUPPRESSED
    assert transactional.status == Message.Status.QUEUED
    assert result.suppressed == 3
    assert len(events_named("unsubscribed")) == 3  # one per message


def test_engagement_that_changes_nothing_leaves_the_message_row_alone(
    post_sendgrid, make_message, process
):
    message = make_message()
    post_sendgrid([sg_event("delivered", message), sg_event("open", message)])
    process()
    message.refresh_from_db()
    before = (message.status, message.opened_at, message.updated_at)

    later = int((T0 + timedelta(hours=2)).timestamp())
    post_sendgrid([sg_event("open", message, timestamp=later), sg_event("deferred", message)])
    result = process(T0 + timedelta(hours=3))

    message.refresh_from_db()
    assert (message.status, message.opened_at, message.updated_at) == before
    assert result.messages_moved == 0
    assert Engagement.objects.filter(message=message).count() == 4
