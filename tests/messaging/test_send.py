import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from apps.messaging import links, render_hooks
from apps.messaging.consent import suppression_add
from apps.messaging.models import Category, Channel, Message, Template
from apps.messaging.services import UnknownTemplate, message_send
from tests.messaging.sending import (
    FOOTER_HTML,
    apply_send_settings,
    grant,
    make_customer,
    make_template,
)

pytestmark = pytest.mark.django_db

S = Message.Status
DAYTIME = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)  # 11:00 in New York
NIGHT = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 23:00 in New York


@pytest.fixture(autouse=True)
def send_settings(settings):
    apply_send_settings(settings)


@pytest.fixture
def ada():
    customer = make_customer(
        "ada",
        email="Ada@Example.com",
        phone="+14155550123",
        timezone="America/New_York",
        first_name="Ada",
        plan="pro",
    )
    grant(customer, Channel.SMS, at=DAYTIME - timedelta(days=30))
    return customer


def send(customer, template, key="k-1", *, now=DAYTIME, **kwargs) -> Message:
    return message_send(
        customer=customer, template=template, idempotency_key=key, now=now, **kwargs
    )


# --- queued ----------------------------------------------------------------------


def test_a_queued_email_keeps_a_snapshot_of_what_was_rendered(ada):
    template = make_template(
        slug="renewal",
        topic="billing-news",
        reply_to="support@acme.example",
        subject="Your {{ customer.plan }} plan, {{ customer.first_name }}",
        html="<html><body><p>Hi {{ customer.first_name }}, your plan renews soon.</p>"
        "<p>{{ company.postal_address }} "
        "<a href='{{ links.unsubscribe }}'>Unsubscribe</a></p></body></html>",
    )

    message = send(
        ada,
        template,
        "onboarding:1:welcome:0",
        journey="onboarding",
        node_id="welcome",
        enrollment_id=41,
    )

    message.refresh_from_db()
    assert message.status == S.QUEUED
    assert (message.channel, message.category, message.topic, message.template_id) == (
        Channel.EMAIL,
        Category.MARKETING,
        "billing-news",
        template.pk,
    )
    assert (message.journey, message.node_id, message.enrollment_id) == (
        "onboarding",
        "welcome",
        41,
    )
    assert (message.to_address, message.from_address, message.reply_to) == (
        "ada@example.com",
        "Acme <hello@acme.example>",
        "support@acme.example",
    )
    assert message.subject == "Your pro plan, Ada"
    assert "<p>Hi Ada, your plan renews soon.</p>" in message.html
    unsubscribe = links.unsubscribe_url(message)
    assert unsubscribe in message.html
    assert message.text.startswith("Hi Ada, your plan renews soon.\n\n1 Demo Street")
    assert f"Unsubscribe ({unsubscribe})" in message.text
    assert (message.created_at, message.reason, message.error, message.send_after) == (
        DAYTIME,
        "",
        "",
        None,
    )


def test_later_template_edits_do_not_change_what_a_message_recorded(ada):
    template = make_template(subject="First subject")
    message = send(ada, template)

    Template.objects.filter(pk=template.pk).update(subject="Edited subject")

    message.refresh_from_db()
    assert message.subject == "First subject"


def test_delivery_is_published_when_the_transaction_commits(
    ada, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = send(ada, make_template())
    assert callbacks and published == []  # nothing before the commit
    message.refresh_from_db()
    # Written stamped: its publication is arranged for the commit.
    assert message.published_at == DAYTIME

    for callback in callbacks:
        callback()

    assert published == [[message.pk]]
    message.refresh_from_db()
    assert message.published_at == DAYTIME


def test_a_send_the_broker_refuses_to_publish_is_left_unstamped_for_the_sweeper(
    ada, published, monkeypatch, django_capture_on_commit_callbacks
):
    from apps.messaging.delivery import messages_sweep
    from apps.messaging.tasks import deliver_messages

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    with monkeypatch.context() as patch:
        patch.setattr(deliver_messages, "delay", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            message = send(ada, make_template())
    message.refresh_from_db()
    assert (message.status, message.published_at) == (Message.Status.QUEUED, None)

    messages_sweep(now=DAYTIME + timedelta(seconds=5))

    assert published == [[message.pk]]


def test_a_send_that_fails_to_render_is_not_stamped_as_published(ada):
    template = make_template(html=f"<p>{{{{ customer.no_such_trait }}}}</p>{FOOTER_HTML}")
    message = send(ada, template)

    message.refresh_from_db()
    assert (message.status, message.published_at) == (Message.Status.FAILED, None)


def test_an_sms_keeps_its_body_and_sender(ada):
    template = make_template(
        channel=Channel.SMS, body="Hi {{ customer.first_name }}, 20% off today. STOP to opt out"
    )

    message = send(ada, template)

    assert (message.status, message.text, message.html, message.subject) == (
        S.QUEUED,
        "Hi Ada, 20% off today. STOP to opt out",
        "",
        "",
    )
    assert (message.to_address, message.from_address) == ("+14155550123", "+15005550006")


def test_post_render_hooks_see_the_stored_message_and_shape_the_html(ada):
    seen = []

    def hook(*, message, html):
        seen.append(message.pk)
        return html.replace("</body>", "<img alt='' src='pixel'></body>")

    render_hooks.on_render(hook)
    try:
        message = send(ada, make_template())
    finally:
        render_hooks.remove_hook(hook)

    assert seen == [message.pk]
    message.refresh_from_db()
    assert "<img alt='' src='pixel'></body>" in message.html


# --- refused and deferred --------------------------------------------------------


def test_a_refused_send_is_kept_with_its_reason_unrendered_and_unpublished(
    ada, django_capture_on_commit_callbacks
):
    suppression_add(
        channel=Channel.EMAIL, address="ADA@example.com", reason="bounce", source="t", now=DAYTIME
    )

    with django_capture_on_commit_callbacks() as callbacks:
        message = send(ada, make_template())

    assert (message.status, message.reason, message.to_address) == (
        S.SUPPRESSED,
        "suppressed: bounced",
        "ada@example.com",
    )
    assert (message.subject, message.html, message.text) == ("", "", "")
    assert callbacks == []


def test_sms_without_consent_is_refused_with_the_reason():
    bob = make_customer(phone="+14155550199", timezone="America/New_York")

    message = send(bob, make_template(channel=Channel.SMS))

    assert (message.status, message.reason) == (S.SUPPRESSED, "no consent: sms")


def test_a_customer_without_an_address_gets_a_refused_message_row():
    nobody = make_customer()

    message = send(nobody, make_template())

    assert (message.status, message.reason, message.to_address) == (
        S.SUPPRESSED,
        "no address: the customer has no email address",
        "",
    )


def test_quiet_hours_defer_a_rendered_message_and_publish_nothing_yet(
    ada, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        message = send(ada, make_template(channel=Channel.SMS), now=NIGHT)

    assert (message.status, message.send_after, message.reason) == (
        S.DEFERRED,
        datetime(2026, 6, 2, 12, 0, tzinfo=UTC),  # 08:00 in New York
        "deferred: quiet hours (sms 08:00-21:00 America/New_York)",
    )
    assert message.text.startswith("Hi Ada!")
    assert callbacks == []


def test_the_frequency_cap_holds_across_journeys(ada):
    sms = make_template(channel=Channel.SMS)

    first = send(ada, sms, "onboarding:1:nudge:0", journey="onboarding")
    second = send(
        ada, sms, "winback:7:nudge:0", journey="winback", now=DAYTIME + timedelta(hours=2)
    )
    third = send(
        ada,
        sms,
        "renewal:9:remind:0",
        journey="renewal",
        now=DAYTIME + timedelta(hours=3),
        over_cap="defer",
    )

    assert first.status == S.QUEUED
    assert (second.status, second.reason) == (S.SUPPRESSED, "skipped: frequency cap 1/1d")
    assert (third.status, third.reason, third.send_after) == (
        S.DEFERRED,
        "deferred: frequency cap 1/1d",
        DAYTIME + timedelta(days=1),
    )


def test_transactional_sends_bypass_the_cap_and_quiet_hours(ada):
    receipt = make_template(channel=Channel.SMS, category=Category.TRANSACTIONAL, body="Receipt #1")
    send(ada, make_template(channel=Channel.SMS), "marketing-1")

    message = send(ada, receipt, "receipt-1", now=NIGHT + timedelta(days=1))

    assert message.status == S.QUEUED


def test_a_test_send_goes_to_the_given_address_whatever_the_consent(ada):
    template = make_template(channel=Channel.SMS)
    marketer = "+14155550142"

    message = send(ada, template, "test:1", to_address=marketer, is_test=True, now=NIGHT)

    assert (message.status, message.to_address, message.is_test) == (S.QUEUED, marketer, True)


# --- failures --------------------------------------------------------------------


def test_a_render_error_fails_the_message_with_the_error(ada):
    template = make_template(channel=Channel.SMS, body="Your {{ customer.seats }} seats")

    message = send(ada, template)

    message.refresh_from_db()
    assert message.status == S.FAILED
    assert message.error == (
        "body: line 1: customer.seats is undefined "
        "(use {{ customer.seats | default(...) }} if it may be missing)"
    )
    assert message.failed_at == DAYTIME


def test_a_marketing_email_without_its_footer_fails_at_render():
    # Saved around the admin's check (an old row, a raw insert): caught at render.
    ada = make_customer(email="ada@example.com")
    template = make_template(html="<p>No footer here</p>")

    message = send(ada, template)

    assert message.status == S.FAILED
    assert "must contain the unsubscribe link" in message.error


def test_one_failing_template_in_a_batch_leaves_the_others_queued(
    ada, django_capture_on_commit_callbacks
):
    bob = make_customer(email="bob@example.com")
    good = make_template()
    broken = make_template(subject="Hi {{ customer.first_name.upper( }}")

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        sent = [
            send(ada, good, "batch:1"),
            send(bob, broken, "batch:2"),
            send(bob, good, "batch:3"),
        ]

    statuses = {
        m.idempotency_key: m.status for m in Message.objects.filter(pk__in=[m.pk for m in sent])
    }
    assert statuses == {"batch:1": S.QUEUED, "batch:2": S.FAILED, "batch:3": S.QUEUED}
    published = set(
        Message.objects.filter(published_at__isnull=False).values_list("idempotency_key", flat=True)
    )
    assert published == {"batch:1", "batch:3"}


def test_a_failing_post_render_hook_fails_that_message_only(ada):
    def hook(*, message, html):
        if message.idempotency_key == "hook:bad":
            raise RuntimeError("tracking is down")
        return html

    render_hooks.on_render(hook)
    try:
        bad = send(ada, make_template(), "hook:bad")
        good = send(ada, make_template(), "hook:good")
    finally:
        render_hooks.remove_hook(hook)

    assert (bad.status, bad.error) == (S.FAILED, "after rendering: RuntimeError: tracking is down")
    assert good.status == S.QUEUED


# --- idempotency and arguments ---------------------------------------------------


def test_the_same_key_twice_returns_the_first_message_and_runs_nothing_again(
    ada, django_capture_on_commit_callbacks
):
    template = make_template()
    first = send(ada, template, "enrollment:5:welcome:0")
    # Were the policies and the render run again, these would show.
    type(ada).objects.filter(pk=ada.pk).update(email="")
    Template.objects.filter(pk=template.pk).update(subject="Edited")
    ada.refresh_from_db()

    with django_capture_on_commit_callbacks() as callbacks:
        again = send(ada, template, "enrollment:5:welcome:0", now=DAYTIME + timedelta(hours=1))

    assert again.pk == first.pk
    assert (again.status, again.subject, again.to_address) == (
        S.QUEUED,
        first.subject,
        "ada@example.com",
    )
    assert Message.objects.filter(idempotency_key="enrollment:5:welcome:0").count() == 1
    assert callbacks == []


def test_a_template_may_be_given_by_slug_and_a_customer_by_id(ada):
    make_template(slug="welcome")

    message = message_send(
        customer=ada.pk, template="welcome", idempotency_key="slug-1", now=DAYTIME
    )

    assert (message.customer_id, message.template.slug) == (ada.pk, "welcome")


def test_an_unknown_template_slug_is_refused_naming_it(ada):
    with pytest.raises(UnknownTemplate, match="template 'welcom' does not exist"):
        send(ada, "welcom")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"over_cap": "later"}, "over_cap: must be 'skip' or 'defer'"),
        ({"idempotency_key": ""}, "idempotency_key: must be 1 to 200 characters"),
    ],
)
def test_bad_arguments_are_refused_naming_them(ada, kwargs, problem):
    kwargs.setdefault("idempotency_key", "k")
    with pytest.raises(ValueError, match=problem):
        message_send(customer=ada, template=make_template(), now=DAYTIME, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sends_with_one_key_make_one_message():
    ada = make_customer(email="ada@example.com")
    template = make_template()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            barrier.wait()
            with transaction.atomic():
                results.append(send(ada, template, "race:1").pk)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    assert Message.objects.filter(idempotency_key="race:1").count() == 1
