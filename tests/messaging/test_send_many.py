"""`message_send_many`: a journey tick's sends as one batch, with the same
outcome per send as `message_send` and a fixed number of statements."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.customers.models import Customer
from apps.messaging import render_hooks
from apps.messaging.consent import suppression_add
from apps.messaging.models import Channel, Message
from apps.messaging.services import (
    SendRequest,
    UnknownTemplate,
    message_send,
    message_send_many,
)
from apps.tracking.models import TrackedLink
from tests.messaging.sending import (
    FOOTER_HTML,
    apply_send_settings,
    grant,
    make_customer,
    make_template,
    revoke,
)

pytestmark = pytest.mark.django_db

S = Message.Status
DAYTIME = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)  # 11:00 in New York
NIGHT = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 23:00 in New York


@pytest.fixture(autouse=True)
def send_settings(settings):
    apply_send_settings(settings, FREQUENCY_CAP_EMAIL="2/7d", TRACKING_ENABLED=True)


def customer(n: int, **traits):
    traits.setdefault("email", f"reader{n}@example.com")
    traits.setdefault("timezone", "America/New_York")
    return make_customer(f"batch-{n}", first_name=f"Reader{n}", **traits)


def requests_for(customers, template, prefix="tick:1", **kwargs):
    return [
        SendRequest(customer=c, template=template, idempotency_key=f"{prefix}:{c.pk}", **kwargs)
        for c in customers
    ]


def test_a_batch_gives_each_customer_the_outcome_message_send_would():
    email = make_template(slug="welcome")
    sms = make_template(slug="welcome-sms", channel=Channel.SMS)
    ok, unsubscribed, no_address = customer(1), customer(2), customer(3, email="")
    suppression_add(
        channel=Channel.EMAIL,
        address="reader2@example.com",
        reason="unsubscribe",
        source="test",
        now=DAYTIME,
    )
    texted = customer(4, phone="+14155550104")
    grant(texted, Channel.SMS, at=DAYTIME - timedelta(days=3))
    not_opted_in = customer(5, phone="+14155550105")

    with transaction.atomic():
        sent = message_send_many(
            requests_for([ok, unsubscribed, no_address], email)
            + requests_for([texted, not_opted_in], sms),
            now=DAYTIME,
        )

    assert [m.customer_id for m in sent] == [
        ok.pk, unsubscribed.pk, no_address.pk, texted.pk, not_opted_in.pk,
    ]  # fmt: skip
    assert [(m.status, m.reason) for m in sent] == [
        (S.QUEUED, ""),
        (S.SUPPRESSED, "suppressed: unsubscribed"),
        (S.SUPPRESSED, "no address: the customer has no email address"),
        (S.QUEUED, ""),
        (S.SUPPRESSED, "no consent: sms"),
    ]
    stored = Message.objects.get(pk=sent[0].pk)
    assert stored.subject == "Hello Reader1"
    assert "Hi Reader1," in stored.html and "/u/" in stored.html
    assert stored.text.startswith("Hi Reader1,")
    assert Message.objects.get(pk=sent[3].pk).text == "Hi Reader4! Reply STOP to stop."
    # Refused sends are not rendered: their reason is the record.
    assert Message.objects.get(pk=sent[1].pk).html == ""


def test_a_later_send_in_the_batch_counts_the_earlier_ones_against_the_cap():
    first, second, third = (make_template(slug=f"news-{n}") for n in range(3))
    reader = customer(1)

    with transaction.atomic():
        sent = message_send_many(
            [
                SendRequest(customer=reader, template=t, idempotency_key=f"cap:{t.slug}")
                for t in (first, second, third)
            ]
            + [
                SendRequest(
                    customer=reader,
                    template=third,
                    idempotency_key="cap:deferred",
                    over_cap="defer",
                )
            ],
            now=DAYTIME,
        )

    assert [m.status for m in sent] == [S.QUEUED, S.QUEUED, S.SUPPRESSED, S.DEFERRED]
    assert sent[2].reason == "skipped: frequency cap 2/7d"
    assert sent[3].send_after == DAYTIME + timedelta(days=7)
    # The next batch sees what this one stored.
    later = message_send(customer=reader, template=first, idempotency_key="cap:later", now=DAYTIME)
    assert later.status == S.SUPPRESSED


def test_quiet_hours_and_consent_are_judged_per_customer_in_a_batch():
    sms = make_template(slug="renewal-sms", channel=Channel.SMS)
    new_york = customer(1, phone="+14155550101")
    tokyo = customer(2, phone="+819012345678", timezone="Asia/Tokyo")  # 12:00 there
    revoked = customer(3, phone="+14155550103")
    for c in (new_york, tokyo, revoked):
        grant(c, Channel.SMS, at=NIGHT - timedelta(days=3))
    revoke(revoked, Channel.SMS, at=NIGHT - timedelta(days=1))

    with transaction.atomic():
        sent = message_send_many(requests_for([new_york, tokyo, revoked], sms), now=NIGHT)

    assert [m.status for m in sent] == [S.DEFERRED, S.QUEUED, S.SUPPRESSED]
    assert sent[0].send_after == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 in New York
    assert sent[2].reason == "no consent: sms (opted out)"


def test_keys_already_sent_or_given_twice_are_sent_once():
    template = make_template(slug="welcome")
    a, b = customer(1), customer(2)
    with transaction.atomic():
        before = message_send(customer=a, template=template, idempotency_key="k:a", now=DAYTIME)

    with transaction.atomic():
        sent = message_send_many(
            [
                SendRequest(customer=a, template=template, idempotency_key="k:a"),
                SendRequest(customer=b, template=template, idempotency_key="k:b"),
                SendRequest(customer=b, template=template, idempotency_key="k:b"),
            ],
            now=DAYTIME + timedelta(minutes=1),
        )

    assert sent[0].pk == before.pk
    assert sent[1].pk == sent[2].pk
    assert Message.objects.count() == 2


def test_an_unknown_template_refuses_the_whole_batch_before_writing_anything():
    template = make_template(slug="welcome")
    reader = customer(1)

    with pytest.raises(UnknownTemplate, match="'no-such-template'"):
        message_send_many(
            [
                SendRequest(customer=reader, template=template, idempotency_key="u:1"),
                SendRequest(customer=reader, template="no-such-template", idempotency_key="u:2"),
            ],
            now=DAYTIME,
        )

    assert not Message.objects.exists()


def test_a_key_already_sent_is_returned_even_if_its_template_was_deleted_since():
    template = make_template(slug="old-news")
    reader = customer(1)
    with transaction.atomic():
        first = message_send(
            customer=reader, template="old-news", idempotency_key="o:1", now=DAYTIME
        )
    template.delete()

    again = message_send_many(
        [SendRequest(customer=reader, template="old-news", idempotency_key="o:1")], now=DAYTIME
    )

    assert [m.pk for m in again] == [first.pk]


def test_a_template_that_does_not_render_fails_its_message_only():
    good = make_template(slug="good")
    bad = make_template(
        slug="bad", subject="Your {{ customer.plan }} plan"
    )  # no plan trait: StrictUndefined
    a, b = customer(1), customer(2)

    with transaction.atomic():
        sent = message_send_many(
            [
                SendRequest(customer=a, template=bad, idempotency_key="r:a"),
                SendRequest(customer=b, template=good, idempotency_key="r:b"),
            ],
            now=DAYTIME,
        )

    failed, queued = (Message.objects.get(pk=m.pk) for m in sent)
    assert failed.status == S.FAILED and "plan" in failed.error
    assert failed.failed_at == DAYTIME and failed.html == ""
    assert queued.status == S.QUEUED and "Hi Reader2," in queued.html


def test_a_post_render_hook_failing_on_one_message_fails_that_message_only():
    template = make_template(
        slug="welcome",
        html="<html><body><p><a href='https://app.example.com/start'>Start</a> or "
        f"<a href='https://app.example.com/help'>get help</a></p>{FOOTER_HTML}</body></html>",
    )
    a, b = customer(1), customer(2)

    def picky(*, message, html):
        if message.customer_id == a.pk:
            raise RuntimeError("no links for you")
        return html + "<!-- seen -->"

    render_hooks.on_render(picky)
    try:
        with transaction.atomic():
            sent = message_send_many(requests_for([a, b], template), now=DAYTIME)
    finally:
        render_hooks.remove_hook(picky)

    failed, queued = (Message.objects.get(pk=m.pk) for m in sent)
    assert failed.status == S.FAILED
    assert failed.error == "after rendering: RuntimeError: no links for you"
    assert queued.status == S.QUEUED and queued.html.endswith("<!-- seen -->")
    # The culprit's tracked links went with its savepoint; the other's stayed.
    assert TrackedLink.objects.filter(message_id=failed.pk).count() == 0
    assert TrackedLink.objects.filter(message_id=queued.pk).count() == 2


def test_a_batch_costs_the_same_statements_whatever_its_size(
    published, django_capture_on_commit_callbacks
):
    template = make_template(slug="welcome")
    small = [customer(n) for n in range(2)]
    large = [customer(n) for n in range(10, 40)]

    def statements(customers, prefix):
        # Publication on commit is outside the count (the callbacks run on leaving).
        with (
            django_capture_on_commit_callbacks(execute=True),
            CaptureQueriesContext(connection) as queries,
        ):
            sent = message_send_many(requests_for(customers, template, prefix), now=DAYTIME)
        assert {m.status for m in sent} == {S.QUEUED}
        return len(queries)

    assert statements(large, "large") == statements(small, "small")
    assert sorted(pk for batch in published for pk in batch) == sorted(
        Message.objects.values_list("pk", flat=True)
    )


def test_a_customer_with_deeply_nested_traits_fails_alone_and_the_batch_sends():
    email = make_template(slug="deep")
    fine, deep, also_fine = customer(11), customer(12), customer(13)
    nested: dict = {}
    for _ in range(900):
        nested = {"x": nested}
    # Written as stored data that an older version (or a direct write) left.
    Customer.objects.filter(pk=deep.pk).update(traits={"first_name": "Deep", "tree": nested})
    deep.refresh_from_db()

    with transaction.atomic():
        sent = message_send_many(requests_for([fine, deep, also_fine], email), now=DAYTIME)

    assert [m.status for m in sent] == [S.QUEUED, S.FAILED, S.QUEUED]
    assert "nested" in sent[1].error and "customer.tree" in sent[1].error
    assert Message.objects.get(pk=sent[0].pk).status == S.QUEUED
    assert Message.objects.get(pk=sent[1].pk).status == S.FAILED
