"""The links a message carries for its recipient: unsubscribe and preferences.

Tokens are signed with `django.core.signing` and a salt per purpose, so an
unsubscribe token can never be replayed as a preferences token (or as a
tracking token, which other modules sign with their own salts). They carry ids
only (RELIABILITY.md 16): no address or phone number is inside, and what the
link acts on is read from the stored message.

- Unsubscribe tokens never expire: an unsubscribe link in a years-old email
  must still work (the law asks for at least 30 days, RELIABILITY.md 17 for
  60), and the worst a leaked one can do is unsubscribe its recipient.
- Preferences tokens, which can also grant consent, expire after
  `PREFERENCES_LINK_MAX_AGE` (a year).

The URLs start with `PUBLIC_BASE_URL` as configured, so the links of a local
`make run` (plain http on 127.0.0.1) open. In production it must be https: the
links end up in the `List-Unsubscribe` header, which mail providers honour only
over https, and the system check `tenure.W001` says so when it is not.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing

from apps.core.mirrors.django_signing import sign_object
from apps.customers.models import Customer

from .models import Message

UNSUBSCRIBE_SALT = "tenure.messaging.unsubscribe"
PREFERENCES_SALT = "tenure.messaging.preferences"
PREFERENCES_LINK_MAX_AGE = timedelta(days=365)

# What a preview (no stored message yet) links to: the public pages answer it
# with their "this link is not valid" page.
PREVIEW_TOKEN = "preview"  # noqa: S105 (a placeholder, not a secret)


class InvalidToken(Exception):
    """The token is malformed, tampered with, signed for another purpose, or
    (preferences) expired. The message is safe to show."""


def public_url(path: str) -> str:
    """`PUBLIC_BASE_URL` + path."""
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/{path.lstrip('/')}"


# --- unsubscribe -------------------------------------------------------------


def unsubscribe_token(message: Message) -> str:
    if message.pk is None:
        raise ValueError("an unsubscribe token needs a stored message (it carries its id)")
    return sign_object({"m": message.pk}, salt=UNSUBSCRIBE_SALT)


def read_unsubscribe_token(token: str) -> int:
    """The message id inside a valid unsubscribe token."""
    try:
        data = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError, UnicodeDecodeError):
        raise InvalidToken("this unsubscribe link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("m"), int):
        raise InvalidToken("this unsubscribe link is not valid")
    return data["m"]


def unsubscribe_url(message: Message | None) -> str:
    """The one-click unsubscribe URL of a stored message (a preview link if
    the message is not stored yet)."""
    token = PREVIEW_TOKEN if message is None or message.pk is None else unsubscribe_token(message)
    return public_url(f"/u/{token}")


# --- preferences -------------------------------------------------------------


@dataclass(frozen=True)
class PreferencesLink:
    customer_id: int
    message_id: int | None  # the message the link came in, when there is one


def preferences_token(customer_or_message: Customer | Message) -> str:
    if isinstance(customer_or_message, Message):
        if customer_or_message.pk is None:
            raise ValueError("a preferences token needs a stored message (it carries its id)")
        data = {"c": customer_or_message.customer_id, "m": customer_or_message.pk}
    else:
        if customer_or_message.pk is None:
            raise ValueError("a preferences token needs a stored customer (it carries its id)")
        data = {"c": customer_or_message.pk}
    return sign_object(data, salt=PREFERENCES_SALT, timestamped=True)


def read_preferences_token(token: str) -> PreferencesLink:
    try:
        data = signing.loads(
            token, salt=PREFERENCES_SALT, max_age=PREFERENCES_LINK_MAX_AGE.total_seconds()
        )
    except signing.SignatureExpired:
        raise InvalidToken("this preferences link has expired") from None
    except (signing.BadSignature, ValueError, UnicodeDecodeError):
        raise InvalidToken("this preferences link is not valid") from None
    if not isinstance(data, dict) or not isinstance(data.get("c"), int):
        raise InvalidToken("this preferences link is not valid")
    message_id = data.get("m")
    return PreferencesLink(data["c"], message_id if isinstance(message_id, int) else None)


def preferences_url(customer_or_message: Customer | Message | None) -> str:
    """The preference centre of a customer (or of a message's recipient)."""
    if isinstance(customer_or_message, Message) and customer_or_message.pk is None:
        # Not stored yet (a preview): the recipient's own link still works.
        customer_id = customer_or_message.customer_id
        customer_or_message = Customer(pk=customer_id) if customer_id else None
    if customer_or_message is None or customer_or_message.pk is None:
        return public_url(f"/preferences/{PREVIEW_TOKEN}")
    return public_url(f"/preferences/{preferences_token(customer_or_message)}")
