import base64
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import signing

from apps.core.mirrors import django_signing as core_signing
from apps.messaging import links
from apps.messaging.models import Category, Channel, Message
from apps.tracking import tokens
from tests.messaging.sending import make_customer

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def message():
    customer = make_customer(email="ada@example.com", phone="+14155550123")
    return Message.objects.create(
        customer=customer,
        channel=Channel.EMAIL,
        category=Category.MARKETING,
        idempotency_key="links-1",
        to_address="ada@example.com",
        created_at=NOW,
    )


def test_the_unsubscribe_url_starts_with_the_public_base_url(settings, message):
    settings.PUBLIC_BASE_URL = "https://mail.example.com:8000/"

    url = links.unsubscribe_url(message)

    assert url.startswith("https://mail.example.com:8000/u/")
    assert links.read_unsubscribe_token(url.rsplit("/", 1)[1]) == message.pk


def test_tokens_carry_ids_only(message):
    for token in (links.unsubscribe_token(message), links.preferences_token(message)):
        payload = token.split(":")[0]
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        assert "@" not in decoded and "+1415" not in decoded
        assert str(message.pk) in decoded


@pytest.mark.parametrize("mangle", ["flip", "truncate", "foreign_salt", "garbage"])
def test_a_tampered_or_foreign_unsubscribe_token_is_refused(message, mangle):
    token = links.unsubscribe_token(message)
    bad = {
        "flip": token[:-1] + ("A" if token[-1] != "A" else "B"),
        "truncate": token[:-3],
        "foreign_salt": signing.Signer(salt="tenure.tracking.click").sign_object({"m": message.pk}),
        "garbage": "not-a-token",
    }[mangle]

    with pytest.raises(links.InvalidToken, match="not valid"):
        links.read_unsubscribe_token(bad)


def test_a_preferences_token_is_not_an_unsubscribe_token(message):
    with pytest.raises(links.InvalidToken):
        links.read_unsubscribe_token(links.preferences_token(message))
    with pytest.raises(links.InvalidToken):
        links.read_preferences_token(links.unsubscribe_token(message))


def test_unsubscribe_links_keep_working_for_years(message):
    with time_machine.travel(NOW, tick=False):
        token = links.unsubscribe_token(message)
    with time_machine.travel(NOW + timedelta(days=3 * 365), tick=False):
        assert links.read_unsubscribe_token(token) == message.pk


def test_preferences_links_work_for_a_year_then_expire(message):
    with time_machine.travel(NOW, tick=False):
        token = links.preferences_token(message)
    with time_machine.travel(NOW + timedelta(days=60), tick=False):
        link = links.read_preferences_token(token)
        assert (link.customer_id, link.message_id) == (message.customer_id, message.pk)
    with (
        time_machine.travel(NOW + timedelta(days=366), tick=False),
        pytest.raises(links.InvalidToken, match="expired"),
    ):
        links.read_preferences_token(token)


def test_a_customer_preferences_link_has_no_message(message):
    url = links.preferences_url(message.customer)

    link = links.read_preferences_token(url.rsplit("/", 1)[1])
    assert (link.customer_id, link.message_id) == (message.customer_id, None)


def test_a_message_not_yet_stored_gets_preview_unsubscribe_and_its_customers_preferences(message):
    draft = Message(customer=message.customer, channel=Channel.EMAIL)

    assert links.unsubscribe_url(draft).endswith("/u/preview")
    token = links.preferences_url(draft).rsplit("/", 1)[1]
    assert links.read_preferences_token(token).customer_id == message.customer_id


@pytest.mark.parametrize("secret", [None, "another key, é", b"a key in bytes"])
def test_link_tokens_are_what_djangos_signers_make_whatever_the_key(settings, secret):
    if secret:
        settings.SECRET_KEY = secret
    stored = [Message(pk=pk, customer_id=pk + 1) for pk in (1, 42, 10**12)]

    with time_machine.travel(NOW, tick=False):
        for message in stored:
            assert links.unsubscribe_token(message) == signing.Signer(
                salt=links.UNSUBSCRIBE_SALT
            ).sign_object({"m": message.pk}, compress=False)
            assert links.preferences_token(message) == signing.dumps(
                {"c": message.customer_id, "m": message.pk}, salt=links.PREFERENCES_SALT
            )
        assert core_signing.sign("12.3", salt="a salt") == signing.Signer(salt="a salt").sign(
            "12.3"
        )
        for message in stored:
            assert tokens.open_token(message.pk) == signing.Signer(salt=tokens.OPEN_SALT).sign(
                str(message.pk)
            )
            assert tokens.click_token(message.pk, 3) == signing.Signer(salt=tokens.CLICK_SALT).sign(
                f"{message.pk}.3"
            )


def test_a_token_signed_before_a_key_rotation_is_read_with_the_fallback(settings, message):
    token = links.unsubscribe_token(message)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "the new key"

    assert links.read_unsubscribe_token(token) == message.pk
    assert links.unsubscribe_token(message) != token  # new tokens use the new key
    assert links.read_unsubscribe_token(links.unsubscribe_token(message)) == message.pk
