"""Open and click tokens: ids only (a message id, a link position), signed
with a salt per purpose, so a token made for one use is refused by the other
and by every other signed link of Tenure (unsubscribe, preferences, NPS).

They do not expire: an email opened or clicked a year later is still that
message's engagement, and the redirect target comes from the database, not
from the token, so an old token can lead nowhere it was not meant to.
"""

from django.core import signing

from apps.core.mirrors.django_signing import sign

OPEN_SALT = "tenure.tracking.open"
CLICK_SALT = "tenure.tracking.click"


def _signer(salt: str) -> signing.Signer:
    # Made per call (cheap): the key is read from the settings each time, with
    # SECRET_KEY_FALLBACKS honoured, so a key rotation keeps old links working.
    return signing.Signer(salt=salt)


def open_token(message_id: int) -> str:
    return sign(str(message_id), salt=OPEN_SALT)  # what _signer(OPEN_SALT).sign makes


def click_token(message_id: int, position: int) -> str:
    return sign(f"{message_id}.{position}", salt=CLICK_SALT)


def read_open_token(token: str) -> int | None:
    """The message id, or None for a tampered, foreign or malformed token."""
    try:
        value = _signer(OPEN_SALT).unsign(token)
    except signing.BadSignature:
        return None
    return int(value) if value.isdigit() else None


def read_click_token(token: str) -> tuple[int, int] | None:
    """(message id, link position), or None for a tampered, foreign or
    malformed token."""
    try:
        value = _signer(CLICK_SALT).unsign(token)
    except signing.BadSignature:
        return None
    message_id, _, position = value.partition(".")
    if not (message_id.isdigit() and position.isdigit()):
        return None
    return int(message_id), int(position)
