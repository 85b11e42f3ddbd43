"""Resending a failed, bounced or unknown message: a new message through the
send path (policies again), keyed resend:<old id>:<n>; the admin action."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.urls import reverse

from apps.messaging.consent import suppression_add
from apps.messaging.models import Channel, Message, Suppression
from apps.messaging.services import NotResendable, message_resend, message_send
from tests.messaging.sending import make_customer, make_template

pytestmark = pytest.mark.django_db

S = Message.Status
AT = datetime(2026, 6, 2, 15, 0, tzinfo=UTC)  # 11:00 in New York
LATER = AT + timedelta(hours=1)


@pytest.fixture(autouse=True)
def send_settings(settings):
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"
    settings.DEFAULT_FROM_EMAIL = "Acme <hello@acme.example>"
    settings.COMPANY_POSTAL_ADDRESS = "1 Demo Street, Springfield"
    settings.FREQUENCY_CAP_EMAIL = ""
    settings.SEND_HOURS_EMAIL = ""
    settings.EMAIL_MARKETING_REQUIRES_OPT_IN = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ada():
    return make_customer("ada", email="ada@example.com", timezone="America/New_York",
                         first_name="Ada")  # fmt: skip


@pytest.fixture
def template():
    return make_template(slug="welcome", subject="Welcome, {{ customer.first_name }}")


def a_message(ada, template, status, **fields) -> Message:
    """A journey's message as the send path wrote it, then ended in `status`."""
    message = message_send(
        customer=ada, template=template, idempotency_key="j:1:welcome:1", now=AT,
        journey="onboarding", node_id="welcome", enrollment_id=41,
    )  # fmt: skip
    Message.objects.filter(pk=message.pk).update(status=status, error="provider said no", **fields)
    message.refresh_from_db()
    return message


@pytest.mark.parametrize("status", [S.FAILED, S.UNKNOWN, S.BOUNCED])
def test_a_resend_is_a_new_message_with_the_same_origin(ada, template, status):
    old = a_message(ada, template, status)

    new = message_resend(old, now=LATER, by="maria")

    assert new.pk != old.pk
    assert new.idempotency_key == f"resend:{old.pk}:1"
    assert (new.template_id, new.customer_id) == (template.pk, ada.pk)
    assert (new.journey, new.node_id, new.enrollment_id) == ("onboarding", "welcome", 41)
    assert new.status == S.QUEUED
    assert new.subject == "Welcome, Ada"
    assert new.created_at == LATER
    old.refresh_from_db()
    assert old.status == status  # the old row stays the record of what happened


def test_resending_twice_makes_two_messages_with_counted_keys(ada, template):
    old = a_message(ada, template, S.FAILED)

    first = message_resend(old, now=LATER, by="maria")
    second = message_resend(old, now=LATER, by="maria")

    assert first.pk != second.pk
    assert [first.idempotency_key, second.idempotency_key] == [
        f"resend:{old.pk}:1",
        f"resend:{old.pk}:2",
    ]


def test_the_resend_goes_to_the_customers_current_address(ada, template):
    old = a_message(ada, template, S.BOUNCED)
    ada.email = "ada.lovelace@example.com"
    ada.save(update_fields=["email"])

    new = message_resend(old, now=LATER)

    assert old.to_address == "ada@example.com"
    assert new.to_address == "ada.lovelace@example.com"


def test_a_resend_to_a_suppressed_address_is_suppressed_with_its_reason(ada, template):
    old = a_message(ada, template, S.BOUNCED)
    suppression_add(channel=Channel.EMAIL, address="ada@example.com",
                    reason=Suppression.Reason.BOUNCE, source="sendgrid", now=AT)  # fmt: skip

    new = message_resend(old, now=LATER)

    assert new.status == S.SUPPRESSED
    assert "suppressed" in new.reason and "bounce" in new.reason.lower()


@pytest.mark.parametrize("status", [S.QUEUED, S.SENT, S.DELIVERED, S.SUPPRESSED, S.DEFERRED])
def test_a_message_that_did_not_fail_is_not_resent(ada, template, status):
    old = a_message(ada, template, status)

    with pytest.raises(NotResendable, match=f"message {old.pk}: status is '{status}'"):
        message_resend(old, now=LATER)

    assert not Message.objects.filter(idempotency_key__startswith="resend:").exists()


def test_a_message_whose_template_was_deleted_is_not_resent(ada, template):
    old = a_message(ada, template, S.FAILED)
    template.delete()
    old.refresh_from_db()

    with pytest.raises(NotResendable, match="template was deleted"):
        message_resend(old, now=LATER)


# --- the admin action -----------------------------------------------------------------


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def run_action(client, ids):
    return client.post(
        reverse("admin:messaging_message_changelist"),
        {"action": "resend", "_selected_action": [str(pk) for pk in ids]},
        follow=True,
    )


def test_the_admin_action_resends_failed_messages_and_skips_the_others(client, ada, template):
    failed = a_message(ada, template, S.FAILED)
    delivered = message_send(customer=ada, template=template, idempotency_key="j:2", now=AT)
    client.force_login(staff("maria", "view_message", "change_template"))

    response = run_action(client, [failed.pk, delivered.pk])

    new = Message.objects.get(idempotency_key=f"resend:{failed.pk}:1")
    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert f"Resent as new messages: 1 queued (#{new.pk})." in notes
    assert any("1 selected message(s) not resent" in note for note in notes)
    assert not Message.objects.filter(idempotency_key=f"resend:{delivered.pk}:1").exists()


def test_a_viewer_has_no_resend_action(client, ada, template):
    failed = a_message(ada, template, S.FAILED)
    client.force_login(staff("vic", "view_message", "view_template"))

    page = client.get(reverse("admin:messaging_message_changelist"))
    assert page.status_code == 200
    assert b'value="resend"' not in page.content

    run_action(client, [failed.pk])
    assert not Message.objects.filter(idempotency_key__startswith="resend:").exists()
