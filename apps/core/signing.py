"""Signing tokens for links, fast: what `signing.Signer(salt=salt).sign` and
`signing.dumps` make, byte for byte, without deriving the key again for every
token. Django hashes the salt and SECRET_KEY into the HMAC key on each call
(salted_hmac), and a send signs several links per email (unsubscribe,
preferences, the open pixel, each tracked link). Tokens are read with
Django's own signers, SECRET_KEY_FALLBACKS and all."""

import hashlib
import hmac
import time
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes


@lru_cache(maxsize=32)
def _hmac_key(salt: str, secret: str | bytes) -> bytes:
    """salted_hmac's key for a Signer's salt; per SECRET_KEY, so a change of
    key (a rotation, a test's settings) is followed."""
    return hashlib.sha256(force_bytes(salt + "signer") + force_bytes(secret)).digest()


def sign(value: str, *, salt: str) -> str:
    """`signing.Signer(salt=salt).sign(value)`."""
    digest = hmac.digest(_hmac_key(salt, settings.SECRET_KEY), value.encode(), "sha256")
    return f"{value}:{signing.b64_encode(digest).decode()}"


def sign_object(obj: Any, *, salt: str, timestamped: bool = False) -> str:
    """`signing.Signer(salt=salt).sign_object(obj)` (uncompressed), or with
    `timestamped` `signing.dumps(obj, salt=salt)`, which adds the time."""
    value = signing.b64_encode(signing.JSONSerializer().dumps(obj)).decode()
    if timestamped:
        value = f"{value}:{signing.b62_encode(int(time.time()))}"
    return sign(value, salt=salt)
