"""The marketer's messaging admin: template editing with its checks, the live
preview and the test send; the outbox; the suppression list; the consent
ledger."""

import re
from datetime import UTC, datetime
from html import unescape

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from apps.messaging.consent import suppression_add
from apps.messaging.models import Category, Channel, ConsentRecord, Message, Suppression, Template
from tests.messaging.sending import FOOTER_HTML, grant, make_customer, make_template

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PREVIEW = "admin:messaging_template_preview"


@pytest.fixture(autouse=True)
def company(settings):
    # Staff users are made for most tests here: hash their passwords cheaply.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.COMPANY_NAME = "Acme & Co"
    settings.COMPANY_POSTAL_ADDRESS = "1 Demo Street, Springfield, 12345, USA"
    settings.PUBLIC_BASE_URL = "https://tenure.example.com"


@pytest.fixture
def ada():
    return make_customer(
        "ada", email="ada@example.com", phone="+14155550123", first_name="Ada", plan="pro"
    )


def template_form(**overrides) -> dict:
    data = {
        "name": "Spring offer",
        "slug": "spring-offer",
        "channel": "email",
        "category": "marketing",
        "topic": "offers",
        "subject": "Hi {{ customer.first_name | default('there') }}",
        "preheader": "",
        "html": f"<p>Our spring offer.</p>{FOOTER_HTML}",
        "text": "",
        "from_email": "",
        "reply_to": "",
        "body": "",
    }
    return {**data, **overrides}


def preview(client, **fields):
    data = template_form(**fields)
    return client.post(reverse(PREVIEW), data)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- editing a template -------------------------------------------------------------


def test_a_compliant_marketing_email_is_saved_from_the_admin_form(admin_client):
    response = admin_client.post(reverse("admin:messaging_template_add"), template_form())

    assert response.status_code == 302, response.content.decode()
    template = Template.objects.get(slug="spring-offer")
    assert template.category == Category.MARKETING
    assert template.topic == "offers"


def test_a_marketing_email_without_postal_address_or_unsubscribe_link_is_refused(admin_client):
    response = admin_client.post(
        reverse("admin:messaging_template_add"), template_form(html="<p>Buy now!</p>")
    )

    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.non_field_errors())
    assert "must contain the unsubscribe link ({{ links.unsubscribe }})" in errors
    assert "must contain the company's postal address ({{ company.postal_address }})" in errors
    assert not Template.objects.filter(slug="spring-offer").exists()


def test_a_template_syntax_error_is_refused_on_the_field_with_its_line(admin_client):
    response = admin_client.post(
        reverse("admin:messaging_template_add"),
        template_form(category="transactional", html="<p>Hi</p>\n<p>{{ customer.first_name </p>"),
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["html"]
    assert any("line 2" in e for e in errors), errors


def test_a_saved_templates_slug_cannot_be_changed(admin_client):
    template = make_template(slug="kept")
    url = reverse("admin:messaging_template_change", args=[template.pk])

    response = admin_client.post(url, template_form(slug="renamed", name="Renamed"))

    assert response.status_code == 302, response.content.decode()
    template.refresh_from_db()
    assert (template.slug, template.name) == ("kept", "Renamed")


def test_the_change_page_carries_the_preview_and_send_test_endpoints(admin_client):
    template = make_template()

    page = admin_client.get(reverse("admin:messaging_template_change", args=[template.pk]))

    html = page.content.decode()
    assert f'data-preview-url="{reverse(PREVIEW)}"' in html
    send_url = reverse("admin:messaging_template_send_test", args=[template.pk])
    assert f'data-send-test-url="{send_url}"' in html
    assert 'class="preview-frame" sandbox=""' in html


# --- the live preview -----------------------------------------------------------------


def test_the_email_preview_renders_the_unsaved_template_for_the_chosen_customer(admin_client, ada):
    response = preview(
        admin_client,
        customer="ada@example.com",
        subject="{{ customer.first_name }}, your {{ customer.plan }} plan",
        preheader="Spring is here",
    )

    assert response.status_code == 200
    data = response.json()
    assert data["customer"]["external_id"] == "ada"
    assert data["problems"] == []
    assert "error" not in data
    assert data["email"]["subject"] == "Ada, your pro plan"
    assert data["email"]["preheader"] == "Spring is here"
    assert "Our spring offer." in data["email"]["html"]
    assert "Acme &amp; Co" in data["email"]["html"]  # autoescaped HTML
    assert data["email"]["text"].startswith("Our spring offer.")
    assert not Template.objects.exists()  # a preview saves nothing


def test_the_preview_uses_the_newest_reachable_customer_when_none_is_chosen(admin_client, ada):
    make_customer("no-email", first_name="Nobody")

    data = preview(admin_client, customer="").json()

    assert data["customer"]["external_id"] == "ada"


def test_the_sms_preview_shows_the_body_and_its_segment_count(admin_client, ada):
    body = "{{ customer.first_name }}: " + "x" * 200  # 205 GSM-7 characters: 2 segments

    data = preview(admin_client, channel="sms", body=body, html="", customer="ada").json()

    assert data["sms"]["body"] == "Ada: " + "x" * 200
    assert data["sms"]["label"] == "GSM-7, 2 segments"
    assert data["sms"]["warning"] == ""
    assert "email" not in data


def test_an_sms_above_three_segments_is_warned_about(admin_client, ada):
    body = "Olá " + "ç" * 270  # ç is not GSM-7: UCS-2, 67 per segment → 5 segments

    data = preview(admin_client, channel="sms", body=body, html="", customer="ada").json()

    assert data["sms"]["label"] == "UCS-2, 5 segments"
    assert "5 segments: more than 3" in data["sms"]["warning"]


def test_the_preview_names_the_variable_a_customer_does_not_have(admin_client, ada):
    data = preview(
        admin_client, customer="ada", category="transactional", html="<p>{{ customer.company }}</p>"
    ).json()

    assert "customer.company is undefined" in data["error"]


def test_a_marketing_email_missing_its_footer_is_previewed_with_the_problem(admin_client, ada):
    data = preview(admin_client, customer="ada", html="<p>Buy now, {{ customer.first_name }}</p>")

    data = data.json()
    assert "unsubscribe link" in data["error"]
    assert any("postal address" in p for p in data["problems"])
    assert "Buy now, Ada" in data["email"]["html"]


def test_an_unknown_preview_customer_is_refused_naming_it(admin_client, ada):
    response = preview(admin_client, customer="nobody@example.com")

    assert response.status_code == 400
    assert "'nobody@example.com'" in response.json()["error"]


def test_the_preview_is_for_staff_only(client, ada):
    anonymous = preview(client)
    User.objects.create_user("customer", password="pw")
    client.login(username="customer", password="pw")
    not_staff = preview(client)
    User.objects.create_user("intern", password="pw", is_staff=True)
    client.login(username="intern", password="pw")
    no_permission = preview(client)

    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert not_staff.status_code == 302 and "/admin/login/" in not_staff["Location"]
    assert no_permission.status_code == 403


def test_the_preview_refuses_a_post_without_the_csrf_token(admin_user, ada):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = preview(client)

    assert response.status_code == 403


# --- send test ----------------------------------------------------------------------


def send_test(client, template, **data):
    return client.post(reverse("admin:messaging_template_send_test", args=[template.pk]), data)


def test_send_test_sends_now_through_the_configured_provider_and_says_so(admin_client, ada, outbox):
    template = make_template(subject="Hello {{ customer.first_name }}")

    response = send_test(admin_client, template, customer="ada", to="Me@Example.com")

    assert response.status_code == 200
    data = response.json()
    message = Message.objects.get(pk=data["message_id"])
    assert (data["status"], data["provider"]) == ("sent", "locmem")
    assert data["provider_message_id"] == message.provider_message_id != ""
    assert message.is_test and message.to_address == "me@example.com"
    assert [(s.to, s.subject) for s in outbox] == [("me@example.com", "Hello Ada")]


def test_send_test_goes_to_the_customers_own_number_when_none_is_given(admin_client, ada, outbox):
    template = make_template(channel=Channel.SMS, body="Hi {{ customer.first_name }}")

    data = send_test(admin_client, template, customer="ada", to="").json()

    assert data["status"] == "sent"
    assert [(s.to, s.text) for s in outbox] == [("+14155550123", "Hi Ada")]


def test_send_test_through_sendgrid_reports_its_message_id(admin_client, ada, fake_provider):
    template = make_template()

    data = send_test(admin_client, template, customer="ada", to="qa@example.com").json()

    assert data["status"] == "sent"
    assert data["provider"] == "sendgrid"
    assert len(fake_provider.sendgrid) == 1
    assert data["provider_message_id"]


def test_send_test_to_a_suppressed_address_says_why_and_sends_nothing(admin_client, ada, outbox):
    template = make_template()
    suppression_add(
        channel="email", address="qa@example.com", reason="bounce", source="test", now=AT
    )

    data = send_test(admin_client, template, customer="ada", to="qa@example.com").json()

    assert data["status"] == "suppressed"
    assert "bounced" in data["reason"]
    assert outbox == []


def test_send_test_refuses_an_address_that_is_not_one(admin_client, ada, outbox):
    template = make_template(channel=Channel.SMS)

    response = send_test(admin_client, template, customer="ada", to="0415 not a number")

    assert response.status_code == 400
    assert "E.164" in response.json()["error"]
    assert not Message.objects.exists()


def test_send_test_names_a_provider_that_is_not_configured(admin_client, ada, settings):
    settings.SMS_PROVIDER = "sendgrid"
    template = make_template(channel=Channel.SMS)

    response = send_test(admin_client, template, customer="ada")

    assert response.status_code == 400
    assert "SMS_PROVIDER='sendgrid': sendgrid does not send sms" in response.json()["error"]
    assert not Message.objects.exists()


def test_send_test_needs_permission_to_change_templates(client, ada, outbox):
    template = make_template()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_template"))
    client.force_login(viewer)

    response = send_test(client, template, customer="ada")

    assert response.status_code == 403
    assert outbox == []


# --- the outbox ---------------------------------------------------------------------


def test_the_outbox_lists_messages_with_their_origin(admin_client, make_message):
    make_message(subject="Welcome!", journey="onboarding", node_id="welcome")
    make_message(channel=Channel.SMS, text="Your trial ends soon", is_test=True)

    page = admin_client.get(reverse("admin:messaging_message_changelist"))

    html = page.content.decode()
    assert "Welcome!" in html and "onboarding / welcome" in html
    assert "Your trial ends soon" in html and "test send" in html
    assert page.context["cl"].show_full_result_count is False


def test_the_outbox_finds_a_customers_messages_by_email(admin_client, make_message, make_customer):
    mine = make_message(customer=make_customer(email="ada@example.com"))
    make_message()

    page = admin_client.get(reverse("admin:messaging_message_changelist"), {"q": "ADA@example.com"})

    assert list(page.context["cl"].result_list) == [mine]


def test_a_message_page_shows_the_email_as_sent_in_a_sandboxed_frame(admin_client, make_message):
    message = make_message(
        subject="Hello",
        html='<p>Hi &amp; welcome</p><a href="https://tenure.example.com/t/c/abc">Go</a>'
        '<img src="https://tenure.example.com/t/o/xyz" alt="">',
        text="Hi & welcome",
        status=Message.Status.FAILED,
        error="sendgrid: 400 bad request",
    )

    page = admin_client.get(reverse("admin:messaging_message_change", args=[message.pk]))

    html = page.content.decode()
    frame = re.search(r'<iframe sandbox="" [^>]*srcdoc="([^"]*)"', html)
    assert frame, "the HTML is shown in a sandboxed iframe"
    srcdoc = unescape(frame.group(1))
    assert "<p>Hi &amp; welcome</p>" in srcdoc
    # Looking at a message must not count as its customer opening or clicking it.
    assert "/t/c/" not in srcdoc and "/t/o/" not in srcdoc
    assert "Hi &amp; welcome</pre>" in html  # the text part
    assert "sendgrid: 400 bad request" in html


def test_an_sms_message_page_shows_the_body_with_its_segments(admin_client, make_message):
    message = make_message(channel=Channel.SMS, text="Hi! " + "a" * 400)

    page = admin_client.get(reverse("admin:messaging_message_change", args=[message.pk]))

    html = page.content.decode()
    assert "GSM-7, 3 segments" in html


def test_the_outbox_is_read_only(admin_client, make_message):
    message = make_message()
    url = reverse("admin:messaging_message_change", args=[message.pk])

    edit = admin_client.post(url, {"status": "sent"})
    delete = admin_client.post(
        reverse("admin:messaging_message_delete", args=[message.pk]), {"post": "yes"}
    )
    add = admin_client.get(reverse("admin:messaging_message_add"))

    assert (edit.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    message.refresh_from_db()
    assert message.status == Message.Status.QUEUED


# --- suppression and consent ---------------------------------------------------------


def test_an_address_is_suppressed_by_hand_through_the_service(admin_client, make_message):
    waiting = make_message(to_address="ada@example.com")

    response = admin_client.post(
        reverse("admin:messaging_suppression_add"),
        {"channel": "email", "address": " Ada@Example.com ", "detail": "asked by phone"},
    )

    assert response.status_code == 302, response.content.decode()
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.reason) == ("ada@example.com", "manual")
    assert suppression.source == "admin: admin" and suppression.detail == "asked by phone"
    waiting.refresh_from_db()
    assert waiting.status == Message.Status.SUPPRESSED  # the service cancelled it


def test_suppressing_an_address_twice_changes_nothing_and_says_so(admin_client):
    first = suppression_add(channel="email", address="ada@example.com", reason="bounce",
                            source="sendgrid", now=AT)  # fmt: skip

    response = admin_client.post(
        reverse("admin:messaging_suppression_add"),
        {"channel": "email", "address": "ada@example.com", "detail": ""},
        follow=True,
    )

    assert Suppression.objects.get() == first
    assert any("already suppressed (Bounced" in m for m in messages_of(response))


def test_a_suppression_with_a_bad_address_is_refused_naming_it(admin_client):
    response = admin_client.post(
        reverse("admin:messaging_suppression_add"),
        {"channel": "sms", "address": "call me", "detail": ""},
    )

    assert response.status_code == 200
    assert "E.164" in str(response.context["adminform"].form.errors["address"])
    assert not Suppression.objects.exists()


def test_lifting_a_suppression_keeps_its_history(admin_client):
    suppression = suppression_add(
        channel="email", address="ada@example.com", reason="bounce", source="sendgrid", now=AT
    )

    response = admin_client.post(
        reverse("admin:messaging_suppression_changelist"),
        {"action": "lift", "_selected_action": [suppression.pk]},
        follow=True,
    )

    suppression.refresh_from_db()
    assert suppression.lifted_at is not None and suppression.lifted_by == "admin"
    assert any("Lifted 1 suppression" in m for m in messages_of(response))


def test_suppressions_are_found_by_exact_address_and_never_deleted(admin_client):
    kept = suppression_add(channel="email", address="ada@example.com", reason="manual",
                           source="t", now=AT)  # fmt: skip
    suppression_add(channel="email", address="bob@example.com", reason="manual", source="t", now=AT)

    found = admin_client.get(
        reverse("admin:messaging_suppression_changelist"), {"q": "ADA@example.com"}
    )
    delete = admin_client.post(
        reverse("admin:messaging_suppression_delete", args=[kept.pk]), {"post": "yes"}
    )

    assert list(found.context["cl"].result_list) == [kept]
    assert delete.status_code == 403


def test_the_consent_ledger_is_read_only_and_searchable_by_customer(admin_client, ada):
    record = grant(ada, Channel.SMS, at=AT)
    grant(make_customer("bob", email="bob@example.com"), Channel.EMAIL, at=AT)
    changelist = reverse("admin:messaging_consentrecord_changelist")

    found = admin_client.get(changelist, {"q": "ada"})
    add = admin_client.get(reverse("admin:messaging_consentrecord_add"))
    change = admin_client.post(
        reverse("admin:messaging_consentrecord_change", args=[record.pk]), {"status": "revoked"}
    )
    delete = admin_client.post(
        reverse("admin:messaging_consentrecord_delete", args=[record.pk]), {"post": "yes"}
    )

    assert list(found.context["cl"].result_list) == [record]
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert ConsentRecord.objects.get(pk=record.pk).status == "granted"


def test_the_apps_above_add_to_the_message_page_through_its_registry(rf, admin_user):
    """Tracking and surveys fill `message_page`; none replaces messaging's own
    admin. Inlines show in INSTALLED_APPS order."""
    from django.contrib import admin

    from apps.messaging.admin import MessageAdmin

    model_admin = admin.site.get_model_admin(Message)
    request = rf.get("/")
    request.user = admin_user

    assert type(model_admin) is MessageAdmin
    assert [i.__name__ for i in model_admin.get_inlines(request, None)] == [
        "MessageEngagementInline",
        "MessageProviderEventInline",
        "MessageSurveyInline",
    ]
