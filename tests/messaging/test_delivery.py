"""The delivery service through the real SDKs and the fake API: one provider
call per claim, retries with backoff, permanent errors and what they record."""

import contextlib
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection

from apps.messaging.delivery import JITTER, LEASE_EXPIRED, backoff, messages_deliver, messages_sweep
from apps.messaging.models import Category, Channel, ConsentRecord, Message, Suppression
from apps.messaging.selectors import consent_state
from tests.fakes.network import closed_port_url, tls_to_plain_http, unanswered_connect_url
from tests.fakes.provider import Reply

from .conftest import T0

S = Message.Status


def soon_after(start, moment) -> bool:
    """A batch's clock is its `now` plus the time it has run: a few seconds at most here."""
    return start <= moment <= start + timedelta(seconds=5)


def reload(message: Message) -> Message:
    message.refresh_from_db()
    return message


def test_a_queued_email_is_sent_once_and_recorded(fake_provider, make_message):
    message = make_message()

    report = messages_deliver([message.pk], now=T0)

    reload(message)
    assert report.sent == 1
    assert message.status == S.SENT
    assert message.provider == "sendgrid"
    assert message.attempts == 1
    assert soon_after(T0, message.sent_at)
    assert message.lease_until is None
    (request,) = fake_provider.sendgrid
    assert message.provider_message_id.startswith("fake-sg-")
    assert request.json["custom_args"]["tenure_message_id"] == str(message.pk)


def test_a_queued_sms_is_sent_with_the_twilio_sid(fake_provider, make_message):
    message = make_message(channel=Channel.SMS)

    messages_deliver([message.pk], now=T0)

    reload(message)
    assert (message.status, message.provider) == (S.SENT, "twilio")
    assert message.provider_message_id.startswith("SM")
    assert len(fake_provider.twilio) == 1


def test_running_the_same_delivery_twice_makes_one_provider_call(fake_provider, make_message):
    messages = [make_message(), make_message(channel=Channel.SMS)]
    ids = [m.pk for m in messages]

    first = messages_deliver(ids, now=T0)
    second = messages_deliver(ids, now=T0 + timedelta(seconds=1))

    assert (first.sent, second.sent, second.skipped) == (2, 0, 2)
    assert len(fake_provider.requests) == 2
    assert {reload(m).attempts for m in messages} == {1}


@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_batch_at_once_call_the_provider_once_each(
    fake_provider, make_message
):
    ids = [make_message().pk for _ in range(20)]
    barrier = threading.Barrier(2)
    reports = []

    def worker():
        try:
            barrier.wait()
            reports.append(messages_deliver(ids, now=T0))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r.sent for r in reports) == 20
    assert len(fake_provider.sendgrid) == 20
    assert fake_provider.stats()["duplicates"] == 0
    assert set(Message.objects.values_list("status", flat=True)) == {S.SENT}


def test_messages_taken_by_id_are_found_by_primary_key_when_statistics_say_none_wait(
    make_message,
):
    from apps.messaging.transitions import CLAIM_SQL, by_id_in

    first = make_message(status=S.SENT)
    Message.objects.bulk_create(
        Message(
            customer_id=first.customer_id, channel=Channel.EMAIL, category=Category.MARKETING,
            idempotency_key=f"stats:{n}", to_address=first.to_address, text="hi",
            status=S.SENT, created_at=T0,
        )
        for n in range(3000)
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")  # nothing waits
    Message.objects.update(status=S.SENDING)  # then a burst

    plan = by_id_in([first.pk], [S.SENDING]).explain()
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN " + CLAIM_SQL.format(ids="%s"),
            [S.SENDING, T0, "sendgrid", T0, first.pk, S.QUEUED, S.DEFERRED, T0],
        )
        claim_plan = "\n".join(row[0] for row in cursor.fetchall())

    for found in (plan, claim_plan):
        assert "messaging_message_pkey" in found and "message_pending" not in found


def test_a_rate_limited_send_waits_for_the_reset_then_goes_once(fake_provider, make_message):
    fake_provider.script("sendgrid", Reply.sendgrid_rate_limited(reset_in=20))
    message = make_message(published_at=T0)

    first = messages_deliver([message.pk], now=T0)

    reload(message)
    assert first.retrying == 1
    assert message.status == S.QUEUED
    assert message.attempts == 1
    assert "HTTP 429" in message.error
    assert message.published_at is None  # the sweeper publishes it when due
    wait = (message.send_after - T0).total_seconds()
    assert 18 <= wait <= 28

    early = messages_deliver([message.pk], now=T0 + timedelta(seconds=5))
    assert early.not_due == 1
    assert len(fake_provider.sendgrid) == 1

    later = messages_deliver([message.pk], now=message.send_after)

    reload(message)
    assert later.sent == 1
    assert (message.status, message.attempts, message.error) == (S.SENT, 2, "")
    assert [r.status for r in fake_provider.sendgrid] == [429, 202]
    assert fake_provider.stats()["unique_message_ids"] == 1


def test_a_5xx_storm_is_retried_a_bounded_number_of_times_then_fails(
    fake_provider, make_message, settings
):
    settings.DELIVERY_MAX_ATTEMPTS = 4
    settings.DELIVERY_BACKOFF_BASE_S = 10
    fake_provider.script("sendgrid", *[Reply.sendgrid_error(503, "unavailable")] * 10)
    message = make_message()
    now, waits = T0, []

    for _ in range(10):
        messages_deliver([message.pk], now=now)
        reload(message)
        if message.status != S.QUEUED:
            break
        waits.append((message.send_after - now).total_seconds())
        now = message.send_after

    assert message.status == S.FAILED
    assert message.attempts == 4
    assert len(fake_provider.sendgrid) == 4
    assert "HTTP 503" in message.error and "gave up after 4 attempts" in message.error
    assert soon_after(now, message.failed_at)
    # Exponential: 10 * 2**n, each within the jitter.
    for n, wait in enumerate(waits, start=1):
        assert 10 * 2**n * (1 - JITTER) <= wait <= 10 * 2**n * (1 + JITTER)


def test_the_backoff_doubles_with_jitter_and_stops_at_the_cap(settings):
    settings.DELIVERY_BACKOFF_BASE_S = 5
    settings.DELIVERY_BACKOFF_CAP_S = 300

    samples = {n: [backoff(n) for _ in range(200)] for n in (1, 3, 10)}

    assert all(10 * 0.75 <= s <= 10 * 1.25 for s in samples[1])
    assert all(40 * 0.75 <= s <= 40 * 1.25 for s in samples[3])
    assert all(300 * 0.75 <= s <= 300 * 1.25 for s in samples[10])
    assert len(set(samples[3])) > 150  # jittered, not one value


HOST_SETTING = {Channel.EMAIL: "SENDGRID_API_HOST", Channel.SMS: "TWILIO_API_BASE_URL"}


@pytest.mark.parametrize("channel", [Channel.EMAIL, Channel.SMS])
@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("refused", "nothing sent"),
        ("connect timeout", "nothing sent"),
        ("tls handshake", "nothing sent"),
    ],
)
def test_failures_before_the_request_left_are_retried_later(
    fake_provider, make_message, settings, setup, expected, channel
):
    settings.DELIVERY_TIMEOUT_S = 0.3
    with contextlib.ExitStack() as stack:
        if setup == "refused":
            url = closed_port_url()
        elif setup == "connect timeout":
            url = stack.enter_context(unanswered_connect_url())
        else:
            url = tls_to_plain_http(fake_provider.url)
        setattr(settings, HOST_SETTING[channel], url)
        message = make_message(channel=channel)

        report = messages_deliver([message.pk], now=T0)

    reload(message)
    assert report.retrying == 1
    assert (message.status, message.attempts) == (S.QUEUED, 1)
    assert expected in message.error
    assert message.send_after > T0
    assert fake_provider.requests == []


@pytest.mark.parametrize(
    ("channel", "setup", "expected"),
    [
        (Channel.EMAIL, "slow", "sendgrid: read timeout after 0.3 s: may have reached SendGrid"),
        (Channel.SMS, "slow", "twilio: read timeout after 0.3 s: may have reached Twilio"),
        (Channel.EMAIL, "dropped", "sendgrid: RemoteDisconnected after the request was written"),
        (Channel.SMS, "dropped", "twilio: ConnectionError after the request was written"),
    ],
)
def test_a_call_that_may_have_reached_the_provider_is_unknown_and_never_sent_again(
    fake_provider, make_message, settings, channel, setup, expected
):
    settings.DELIVERY_TIMEOUT_S = 0.3
    service = "sendgrid" if channel == Channel.EMAIL else "twilio"
    # The provider takes the request and answers after the client gave up.
    reply = Reply(202 if service == "sendgrid" else 201, delay=1.0)
    fake_provider.script(service, reply if setup == "slow" else Reply.drop())
    message = make_message(channel=channel)

    report = messages_deliver([message.pk], now=T0)
    later = T0 + timedelta(hours=2)
    sweep = messages_sweep(now=later)
    again = messages_deliver([message.pk], now=later)

    reload(message)
    assert report.unknown == 1 and report.retrying == 0
    assert (message.status, message.attempts, message.lease_until) == (S.UNKNOWN, 1, None)
    assert message.error.startswith(expected)
    assert (sweep.published, again.skipped) == (0, 1)
    assert len(fake_provider.of(service)) == 1


def test_in_a_sendgrid_group_only_the_call_without_an_answer_is_unknown(
    fake_provider, make_message, settings
):
    settings.DELIVERY_TIMEOUT_S = 0.3
    settings.DELIVERY_CONCURRENCY = 3
    fake_provider.script("sendgrid", Reply(202, delay=1.0))
    messages = [make_message() for _ in range(3)]

    report = messages_deliver([m.pk for m in messages], now=T0)

    assert (report.sent, report.unknown) == (2, 1)
    assert sorted(reload(m).status for m in messages) == sorted([S.SENT, S.SENT, S.UNKNOWN])
    assert len(fake_provider.sendgrid) == 3


def test_a_permanent_sendgrid_error_fails_at_once(fake_provider, make_message):
    fake_provider.script(
        "sendgrid", Reply.sendgrid_error(400, "The to email does not contain a valid address.")
    )
    message = make_message()

    report = messages_deliver([message.pk], now=T0)
    again = messages_deliver([message.pk], now=T0 + timedelta(hours=1))

    reload(message)
    assert (report.failed, again.skipped) == (1, 1)
    assert (message.status, message.attempts) == (S.FAILED, 1)
    assert soon_after(T0, message.failed_at)
    assert message.error == ("sendgrid: HTTP 400: The to email does not contain a valid address.")
    assert len(fake_provider.sendgrid) == 1


def test_twilio_21211_fails_the_message_and_suppresses_the_number_as_invalid(
    fake_provider, make_message
):
    fake_provider.script("twilio", Reply.twilio_error(400, 21211, "Invalid 'To' Phone Number"))
    message = make_message(channel=Channel.SMS)
    waiting = make_message(channel=Channel.SMS, customer=message.customer, published_at=T0)

    messages_deliver([message.pk], now=T0)

    reload(message)
    assert message.status == S.FAILED
    assert "code 21211" in message.error
    suppression = Suppression.objects.get(channel=Channel.SMS, address=message.to_address)
    assert suppression.reason == Suppression.Reason.INVALID
    assert suppression.source == "twilio error 21211"
    assert suppression.lifted_at is None
    # What was still waiting for that number will not go either.
    assert reload(waiting).status == S.SUPPRESSED
    assert not ConsentRecord.objects.exists()


def test_twilio_21610_records_the_opt_out_in_the_ledger_and_the_suppression_list(
    fake_provider, make_message
):
    fake_provider.script(
        "twilio", Reply.twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
    )
    message = make_message(channel=Channel.SMS)
    ConsentRecord.objects.create(
        customer=message.customer,
        channel=Channel.SMS,
        status=ConsentRecord.Status.GRANTED,
        source=ConsentRecord.Source.API,
        recorded_at=T0 - timedelta(days=30),
    )

    messages_deliver([message.pk], now=T0)

    reload(message)
    assert message.status == S.FAILED
    suppression = Suppression.objects.get(channel=Channel.SMS, address=message.to_address)
    assert suppression.reason == Suppression.Reason.SMS_OPT_OUT
    revoked = ConsentRecord.objects.filter(customer=message.customer).latest("recorded_at")
    assert (revoked.status, revoked.source) == (
        ConsentRecord.Status.REVOKED,
        ConsentRecord.Source.PROVIDER,
    )
    assert soon_after(T0, revoked.recorded_at)
    assert "21610" in revoked.wording
    assert consent_state(message.customer, Channel.SMS) is False


@pytest.mark.parametrize("code", [21408, 21614])
def test_other_twilio_recipient_errors_fail_without_suppressing(fake_provider, make_message, code):
    fake_provider.script("twilio", Reply.twilio_error(400, code, "cannot send there"))
    message = make_message(channel=Channel.SMS)

    messages_deliver([message.pk], now=T0)

    assert reload(message).status == S.FAILED
    assert not Suppression.objects.exists()


def test_twilio_retry_after_sets_when_the_message_goes_again(fake_provider, make_message):
    fake_provider.script(
        "twilio", Reply.twilio_error(429, 20429, "Too Many Requests", headers={"Retry-After": "30"})
    )
    message = make_message(channel=Channel.SMS)

    messages_deliver([message.pk], now=T0)

    reload(message)
    assert message.status == S.QUEUED
    assert 30 <= (message.send_after - T0).total_seconds() <= 35


def test_an_unreadable_success_answer_marks_the_message_unknown_and_never_resends_it(
    fake_provider, make_message
):
    # Twilio took it (201) but the answer cannot be read: it may well have gone.
    fake_provider.script("twilio", Reply(201, b"<html>proxy says hi</html>"))
    message = make_message(channel=Channel.SMS)

    report = messages_deliver([message.pk], now=T0)
    messages_sweep(now=T0 + timedelta(hours=1))
    messages_deliver([message.pk], now=T0 + timedelta(hours=1))

    reload(message)
    assert report.unknown == 1
    assert message.status == S.UNKNOWN
    assert message.error.startswith("twilio: ")
    assert len(fake_provider.twilio) == 1


def test_a_deferred_message_goes_only_once_it_is_due(fake_provider, make_message):
    message = make_message(status=S.DEFERRED, send_after=T0 + timedelta(hours=2), published_at=T0)

    early = messages_deliver([message.pk], now=T0)

    assert early.not_due == 1
    assert reload(message).status == S.DEFERRED
    assert message.published_at is None  # the sweeper publishes it when due
    assert fake_provider.requests == []

    due = messages_deliver([message.pk], now=T0 + timedelta(hours=2))

    assert due.sent == 1
    assert reload(message).status == S.SENT


@pytest.mark.parametrize("status", [S.SENDING, S.SENT, S.SUPPRESSED, S.FAILED, S.UNKNOWN])
def test_a_message_that_is_not_waiting_is_never_claimed(fake_provider, make_message, status):
    message = make_message(status=status)

    report = messages_deliver([message.pk, 999_999], now=T0)

    assert report.skipped == 2
    assert reload(message).status == status
    assert fake_provider.requests == []


def test_an_address_suppressed_after_the_message_was_queued_is_not_sent(
    fake_provider, make_message
):
    marketing = make_message(category=Category.MARKETING)
    receipt = make_message(customer=marketing.customer, category=Category.TRANSACTIONAL)
    bounced = make_message()
    for address, reason in (
        (marketing.to_address.upper(), Suppression.Reason.UNSUBSCRIBE),
        (bounced.to_address, Suppression.Reason.BOUNCE),
    ):
        # Written directly, as if it happened after the messages were queued
        # (suppression_add would cancel them itself).
        Suppression.objects.create(
            channel=Channel.EMAIL, address=address.lower(), reason=reason, created_at=T0
        )

    report = messages_deliver([marketing.pk, receipt.pk, bounced.pk], now=T0)

    assert (report.suppressed, report.sent) == (2, 1)
    assert (reload(marketing).status, marketing.reason) == (
        S.SUPPRESSED,
        "suppressed: unsubscribed",
    )
    assert (reload(bounced).status, bounced.reason) == (S.SUPPRESSED, "suppressed: bounced")
    assert reload(receipt).status == S.SENT  # an unsubscribe does not stop receipts
    assert [r.json["custom_args"]["tenure_message_id"] for r in fake_provider.sendgrid] == [
        str(receipt.pk)
    ]


def test_the_send_time_check_normalizes_an_address_and_takes_an_invalid_one_as_it_is(
    fake_provider, make_message
):
    spaced = make_message(to_address="  Grace.H@Example.COM ")
    invalid = make_message(to_address="Not An Address")
    other_invalid = make_message(to_address="Other Bad")
    for address in ("grace.h@example.com", "Not An Address", "other bad"):
        Suppression.objects.create(
            channel=Channel.EMAIL, address=address, reason=Suppression.Reason.BOUNCE, created_at=T0
        )

    report = messages_deliver([spaced.pk, invalid.pk, other_invalid.pk], now=T0)

    assert (report.suppressed, report.sent) == (2, 1)
    assert reload(spaced).status == reload(invalid).status == S.SUPPRESSED
    # Not an address, so not lower-cased: "other bad" is another entry.
    assert reload(other_invalid).status == S.SENT


def test_a_misconfigured_provider_leaves_the_messages_waiting(
    fake_provider, make_message, settings
):
    settings.TWILIO_AUTH_TOKEN = ""
    sms = make_message(channel=Channel.SMS, published_at=T0)
    email = make_message()

    report = messages_deliver([sms.pk, email.pk], now=T0)

    assert (report.handed_back, report.sent) == (1, 1)
    reload(sms)
    assert (sms.status, sms.attempts, sms.published_at) == (S.QUEUED, 0, T0)


def test_a_batch_past_its_time_budget_hands_the_rest_back(fake_provider, make_message, settings):
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 1  # a budget of half a second
    settings.DELIVERY_CONCURRENCY = 1  # the budget is checked between groups
    fake_provider.script("sendgrid", Reply(202, delay=0.7))
    messages = [make_message(published_at=T0) for _ in range(3)]

    report = messages_deliver([m.pk for m in messages], now=T0)

    assert (report.sent, report.handed_back) == (1, 2)
    first, *rest = [reload(m) for m in messages]
    assert first.status == S.SENT
    assert {(m.status, m.attempts, m.published_at) for m in rest} == {(S.QUEUED, 0, None)}


def test_a_lease_past_its_end_becomes_unknown_and_is_never_sent(fake_provider, make_message):
    stuck = make_message(status=S.SENDING, lease_until=T0, attempts=1)
    live = make_message(status=S.SENDING, lease_until=T0 + timedelta(minutes=2), attempts=1)

    sweep = messages_sweep(now=T0 + timedelta(seconds=1))
    report = messages_deliver([stuck.pk, live.pk], now=T0 + timedelta(seconds=2))

    assert sweep.expired == 1
    reload(stuck)
    assert (stuck.status, stuck.error, stuck.lease_until) == (S.UNKNOWN, LEASE_EXPIRED, None)
    assert reload(live).status == S.SENDING
    assert report.skipped == 2
    assert fake_provider.requests == []


def test_statuses_only_move_forward(make_message):
    from apps.messaging.transitions import can_move, message_move, status_if_allowed

    assert can_move(S.QUEUED, S.SENDING) and can_move(S.SENDING, S.QUEUED)
    assert can_move(S.SENT, S.DELIVERED) and can_move(S.DELIVERED, S.OPENED)
    assert not can_move(S.DELIVERED, S.SENT)
    assert not can_move(S.OPENED, S.DELIVERED)
    assert not can_move(S.UNKNOWN, S.QUEUED)  # maybe sent: never queued again
    assert not any(can_move(S.FAILED, new) for new in S.values)
    opened = make_message(status=S.OPENED)

    assert not message_move(opened.pk, S.DELIVERED, now=T0, delivered_at=T0)
    assert (reload(opened).status, opened.delivered_at) == (S.OPENED, None)
    assert message_move(opened.pk, S.CLICKED, now=T0, clicked_at=T0)
    assert (reload(opened).status, opened.clicked_at) == (S.CLICKED, T0)

    # A write that must happen either way moves the status only where allowed.
    Message.objects.filter(pk=opened.pk).update(
        status=status_if_allowed(S.SENT), provider_message_id="late-id"
    )
    assert (reload(opened).status, opened.provider_message_id) == (S.CLICKED, "late-id")


def test_a_message_send_is_published_on_commit_and_delivered_with_its_unsubscribe_link(
    db, fake_provider, published, settings, django_capture_on_commit_callbacks
):
    from apps.messaging.links import unsubscribe_url
    from apps.messaging.services import message_send
    from tests.messaging.sending import make_customer, make_template

    settings.COMPANY_POSTAL_ADDRESS = "1 Demo Street, Springfield"
    customer = make_customer(email="grace@example.com", first_name="Grace")
    template = make_template(subject="Hi {{ customer.first_name }}")

    with django_capture_on_commit_callbacks(execute=True):
        message = message_send(
            customer=customer, template=template, idempotency_key="e2e:1", now=T0
        )

    assert published == [[message.pk]]
    report = messages_deliver(published[0], now=T0)

    reload(message)
    assert (report.sent, message.status) == (1, S.SENT)
    body = fake_provider.sendgrid[0].json
    assert body["subject"] == "Hi Grace"
    assert body["personalizations"][0]["to"] == [{"email": "grace@example.com"}]
    assert body["headers"]["List-Unsubscribe"] == f"<{unsubscribe_url(message)}>"
    assert body["content"][1]["value"] == message.html


@pytest.mark.django_db(transaction=True)
def test_each_call_happens_on_a_committed_claim_after_the_previous_result_is_committed(
    fake_provider, make_message, settings
):
    settings.DELIVERY_CONCURRENCY = 1  # one call in flight at a time
    fake_provider.script("sendgrid", Reply(202, delay=0.5), Reply(202, delay=0.5))
    first, second = make_message(), make_message()
    worker = threading.Thread(
        target=lambda: (messages_deliver([first.pk, second.pk], now=T0), connection.close())
    )

    def seen_while_call_in_flight(calls: int) -> list[str]:
        deadline = time.monotonic() + 10
        while len(fake_provider.sendgrid) < calls and time.monotonic() < deadline:
            time.sleep(0.01)
        # This test's own connection sees only what the worker committed.
        return [reload(first).status, reload(second).status]

    worker.start()
    during_first = seen_while_call_in_flight(1)
    during_second = seen_while_call_in_flight(2)
    worker.join()

    assert during_first == [S.SENDING, S.QUEUED]
    assert during_second == [S.SENT, S.SENDING]
    assert [reload(first).status, reload(second).status] == [S.SENT, S.SENT]


def test_each_message_of_a_group_is_recorded_with_its_own_provider_id(make_message, settings):
    from apps.messaging.providers.locmem import outbox

    settings.EMAIL_PROVIDER = "locmem"
    settings.DELIVERY_CONCURRENCY = 4
    outbox.clear()
    messages = [make_message() for _ in range(4)]

    report = messages_deliver([m.pk for m in messages], now=T0)

    assert report.sent == 4
    given = {sent.message_id: sent.provider_message_id for sent in outbox}
    for message in map(reload, messages):
        assert (message.status, message.lease_until, message.error) == (S.SENT, None, "")
        assert message.provider_message_id == given[message.pk]
        assert message.sent_at >= T0


def test_a_groups_sends_and_the_next_groups_claims_are_one_statement(make_message, settings):
    from django.test.utils import CaptureQueriesContext

    from apps.messaging.providers.locmem import outbox

    settings.EMAIL_PROVIDER = "locmem"
    settings.DELIVERY_CONCURRENCY = 2
    outbox.clear()
    messages = [make_message() for _ in range(5)]

    with CaptureQueriesContext(connection) as queries:
        report = messages_deliver([m.pk for m in messages], now=T0)

    writes = [q["sql"] for q in queries if q["sql"].startswith(("UPDATE", "WITH"))]
    # Claim 1-2; sent 1-2 with claim 3-4; sent 3-4 with claim 5; sent 5.
    assert [(" sent AS (" in sql, "RETURNING" in sql) for sql in writes] == [
        (False, True),
        (True, True),
        (True, True),
        (False, False),
    ]
    assert report.sent == 5
    given = {sent.message_id: sent.provider_message_id for sent in outbox}
    for message in map(reload, messages):
        assert (message.status, message.attempts, message.lease_until) == (S.SENT, 1, None)
        assert message.provider_message_id == given[message.pk]


def test_sends_written_with_the_next_claims_never_move_a_status_back(make_message, settings):
    from apps.messaging.delivery.delivering import _claim
    from apps.messaging.delivery.outcomes import _Sent
    from apps.messaging.providers import get_provider

    settings.EMAIL_PROVIDER = "locmem"
    # A provider's event overtook the worker recording the send.
    overtaken = make_message(status=S.DELIVERED, provider="locmem", attempts=1)
    waiting = make_message()

    claimed = _claim(
        [waiting], get_provider(Channel.EMAIL), now=T0, sent=[_Sent(overtaken, "locmem-1", T0)]
    )

    assert claimed == [waiting]
    reload(overtaken)
    assert (overtaken.status, overtaken.provider_message_id) == (S.DELIVERED, "locmem-1")
    reload(waiting)
    assert (waiting.status, waiting.attempts, waiting.provider) == (S.SENDING, 1, "locmem")


def test_each_delivery_thread_keeps_its_connection_to_twilio(fake_provider, make_message, settings):
    settings.DELIVERY_CONCURRENCY = 12  # more than the SDK's own pool keeps
    fake_provider.delay = 0.2  # so the calls of a group overlap
    messages = [make_message(channel=Channel.SMS) for _ in range(24)]

    report = messages_deliver([m.pk for m in messages], now=T0)

    assert report.sent == 24
    assert fake_provider.connections <= 12


@pytest.mark.django_db(transaction=True)
def test_a_group_is_claimed_in_one_commit_called_at_once_and_recorded_before_the_next(
    fake_provider, make_message, settings
):
    settings.DELIVERY_CONCURRENCY = 3
    fake_provider.script("sendgrid", *[Reply(202, delay=0.6) for _ in range(5)])
    messages = [make_message() for _ in range(5)]
    ids = [m.pk for m in messages]
    worker = threading.Thread(target=lambda: (messages_deliver(ids, now=T0), connection.close()))

    def statuses_once_calls_reach(calls: int) -> list[str]:
        deadline = time.monotonic() + 10
        while len(fake_provider.sendgrid) < calls and time.monotonic() < deadline:
            time.sleep(0.01)
        return [reload(m).status for m in messages]

    started = time.monotonic()
    worker.start()
    first_group = statuses_once_calls_reach(3)
    second_group = statuses_once_calls_reach(5)
    worker.join()

    # Three calls in flight together, each on a committed claim; the rest waits.
    assert first_group == [S.SENDING] * 3 + [S.QUEUED] * 2
    # The first group's answers were committed with the second group's claims.
    assert second_group == [S.SENT] * 3 + [S.SENDING] * 2
    assert [reload(m).status for m in messages] == [S.SENT] * 5
    # Two rounds of concurrent calls, not five calls one after the other.
    assert time.monotonic() - started < 5 * 0.6
