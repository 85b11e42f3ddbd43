"""`manage.py send_test --template SLUG --customer EXTERNAL_ID`: render and
send now through the configured provider; say what happened."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.messaging.consent import suppression_add
from apps.messaging.models import Channel, Message
from tests.fakes.provider import Reply
from tests.messaging.sending import make_customer, make_template

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def company(settings):
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"


@pytest.fixture
def ada():
    return make_customer("ada", email="ada@example.com", phone="+14155550123", first_name="Ada")


def send_test(*args: str) -> str:
    out = StringIO()
    call_command("send_test", *args, stdout=out)
    return out.getvalue()


def test_it_renders_and_sends_now_and_prints_the_outcome(ada, outbox):
    make_template(slug="welcome", subject="Welcome, {{ customer.first_name }}")

    printed = send_test("--template", "welcome", "--customer", "ada")

    message = Message.objects.get()
    assert message.status == Message.Status.SENT and message.is_test
    assert f"message {message.pk}: sent" in printed
    assert f"provider message id {message.provider_message_id}" in printed
    assert "via locmem" in printed
    assert [(s.to, s.subject) for s in outbox] == [("ada@example.com", "Welcome, Ada")]


def test_an_sms_goes_to_the_customers_number_or_the_one_given(ada, outbox):
    make_template(slug="nudge", channel=Channel.SMS, body="Hi {{ customer.first_name }}")

    send_test("--template", "nudge", "--customer", "ada")
    send_test("--template", "nudge", "--customer", "ada", "--to", "+44 20 7946 0000")

    assert [(s.to, s.text) for s in outbox] == [
        ("+14155550123", "Hi Ada"),
        ("+442079460000", "Hi Ada"),
    ]


def test_it_goes_through_the_real_sendgrid_sdk_when_configured(ada, fake_provider):
    make_template(slug="welcome")

    printed = send_test("--template", "welcome", "--customer", "ada")

    assert "via sendgrid" in printed
    [request] = fake_provider.sendgrid
    assert request.json["personalizations"][0]["to"][0]["email"] == "ada@example.com"
    assert Message.objects.get().provider_message_id in printed


def test_an_unknown_template_is_an_error_listing_the_known_ones(ada, outbox):
    make_template(slug="welcome")

    with pytest.raises(
        CommandError, match=r"no template with slug 'welcom' \(templates: welcome\)"
    ):
        send_test("--template", "welcom", "--customer", "ada")
    assert not Message.objects.exists()


def test_an_unknown_customer_is_an_error(outbox):
    make_template(slug="welcome")

    with pytest.raises(CommandError, match="no customer with external id 'nobody'"):
        send_test("--template", "welcome", "--customer", "nobody")


def test_a_render_error_is_reported_and_nothing_is_written(ada, outbox):
    make_template(slug="plan", subject="Your {{ customer.plan }} plan")

    with pytest.raises(
        CommandError, match=r"does not render: subject: .*customer\.plan is undefined"
    ):
        send_test("--template", "plan", "--customer", "ada")
    assert not Message.objects.exists()
    assert outbox == []


def test_a_customer_without_the_address_needs_to(outbox):
    make_customer("bob", email="bob@example.com")
    make_template(slug="nudge", channel=Channel.SMS)

    with pytest.raises(CommandError, match="has no phone number; give one with --to"):
        send_test("--template", "nudge", "--customer", "bob")


def test_a_bad_to_address_is_an_error_naming_it(ada, outbox):
    make_template(slug="welcome")

    with pytest.raises(CommandError, match="--to: 'not-an-email' is not an email address"):
        send_test("--template", "welcome", "--customer", "ada", "--to", "not-an-email")


def test_a_suppressed_address_is_not_sent_and_the_reason_is_the_error(ada, outbox):
    make_template(slug="welcome")
    suppression_add(channel="email", address="ada@example.com", reason="complaint",
                    source="sendgrid", now=AT)  # fmt: skip

    with pytest.raises(CommandError, match="was not sent: suppressed: spam complaint"):
        send_test("--template", "welcome", "--customer", "ada")
    assert Message.objects.get().status == Message.Status.SUPPRESSED
    assert outbox == []


def test_a_permanent_provider_error_fails_the_command(ada, fake_provider):
    make_template(slug="welcome")
    fake_provider.script("sendgrid", Reply.sendgrid_error(400, "The from address is invalid"))

    with pytest.raises(CommandError, match="was not sent"):
        send_test("--template", "welcome", "--customer", "ada")
    assert Message.objects.get().status == Message.Status.FAILED


def test_a_provider_outage_leaves_it_queued_for_a_retry_and_fails_the_command(ada, fake_provider):
    make_template(slug="welcome")
    fake_provider.script("sendgrid", Reply.sendgrid_error(503, "Service Unavailable"))

    with pytest.raises(CommandError, match=r"was not sent yet: .*delivery retries it at"):
        send_test("--template", "welcome", "--customer", "ada")
    message = Message.objects.get()
    assert message.status == Message.Status.QUEUED and message.send_after is not None
    assert len(fake_provider.sendgrid) == 1


def test_a_provider_that_is_not_configured_is_named_and_nothing_is_written(ada, settings):
    settings.EMAIL_PROVIDER = "sendgird"
    make_template(slug="welcome")

    with pytest.raises(CommandError, match="not sent: EMAIL_PROVIDER='sendgird' is not a provider"):
        send_test("--template", "welcome", "--customer", "ada")
    assert not Message.objects.exists()
