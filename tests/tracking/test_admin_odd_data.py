"""The admin pages that show tracking data answer 200 whatever a stored
payload holds (RELIABILITY.md 27): rows written before the webhooks refused
odd input (deep nesting, huge strings) still open."""

import pytest
from django.db import connection
from django.urls import reverse

from apps.tracking.models import InboundSms, ProviderEvent

from .conftest import T0

pytestmark = pytest.mark.django_db


def _deep(depth: int) -> str:
    return '{"a": ' * depth + '"bottom"' + "}" * depth


def _store_raw_payload(model, pk: int, text: str) -> None:
    """Write the payload's JSON text as an older version could have stored it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET payload = %s::jsonb WHERE id = %s",  # noqa: S608
            [text, pk],
        )


ODD_PAYLOADS = [
    pytest.param(_deep(200), id="nested 200"),
    pytest.param(_deep(900), id="nested 900"),
    pytest.param(_deep(3000), id="nested 3000"),
    pytest.param('{"useragent": "' + "x" * 300_000 + '"}', id="a long string"),
    pytest.param('[1, "two", null]', id="not an object"),
    pytest.param('"just text"', id="a bare string"),
]


@pytest.fixture
def odd_event(make_message):
    def make(payload_text: str) -> ProviderEvent:
        message = make_message()
        event = ProviderEvent.objects.create(
            provider="sendgrid", event_id="odd", kind="open", message=message,
            occurred_at=T0, received_at=T0, payload={},
        )  # fmt: skip
        _store_raw_payload(ProviderEvent, event.pk, payload_text)
        return event

    return make


@pytest.mark.parametrize("payload", ODD_PAYLOADS)
def test_provider_event_pages_open_whatever_the_stored_payload(admin_client, odd_event, payload):
    event = odd_event(payload)

    listed = admin_client.get(reverse("admin:tracking_providerevent_changelist"))
    shown = admin_client.get(reverse("admin:tracking_providerevent_change", args=[event.pk]))
    message = admin_client.get(reverse("admin:messaging_message_change", args=[event.message_id]))

    assert (listed.status_code, shown.status_code, message.status_code) == (200, 200, 200)
    page = shown.content.decode()
    assert any(text in page for text in ("bottom", "x" * 1000, "two", "just text"))


@pytest.mark.parametrize("payload", ODD_PAYLOADS)
def test_inbound_sms_pages_open_whatever_the_stored_payload(admin_client, payload):
    inbound = InboundSms.objects.create(
        message_sid="SModd", from_number="+14155550100", body="hi", kind="text",
        received_at=T0, payload={},
    )  # fmt: skip
    _store_raw_payload(InboundSms, inbound.pk, payload)

    listed = admin_client.get(reverse("admin:tracking_inboundsms_changelist"))
    shown = admin_client.get(reverse("admin:tracking_inboundsms_change", args=[inbound.pk]))

    assert (listed.status_code, shown.status_code) == (200, 200)
