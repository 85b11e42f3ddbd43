"""apps/core/mirrors/django_signing.py signs link tokens as Django's signers
do, deriving the key once. These tests fail when the Django internals it
mirrors change underneath it (then read the new upstream code, bring the
mirror in line, and record the new fingerprints), and check that it makes
Django's tokens byte for byte, which Django's signers then read."""

import hashlib
import inspect
from datetime import UTC, datetime

import django
import pytest
import time_machine
from django.core import signing
from django.utils import crypto

from apps.core.mirrors import django_signing

# sha256 of `inspect.getsource` of each mirrored upstream function, Django 5.2.20.
UPSTREAM = {
    signing.Signer.__init__: "da29deb35b0c7690d2da568620e006e62a8f67bbae130abf5865ff68e46c2dbc",
    signing.Signer.signature: "8d0c888917951e065bf8267c04589d357dcd7718ca8e06f20e61f9ae8fd3a946",
    signing.Signer.sign: "11336483be9c8fb14c72550576455820892d7d3101c0d985fa9034672a3ae813",
    signing.Signer.sign_object: "4704549c8f4f6b12164997c13743ea24f7783b3a216a6e0c53b4b24c3c405648",
    signing.TimestampSigner.timestamp: (
        "e22ca39ff5af1352a99d8c9780335d51c7b07279371f7eda2c0da9605c935bf8"
    ),
    signing.TimestampSigner.sign: (
        "a44750f1471e733c608e265d3c4cd0ecb2b09c83d1f0036d3fa7ab27e1027ce4"
    ),
    signing.dumps: "45937335610f453259f87501dfac4963d8fd4c8a7c2965d3d38339315f23606c",
    signing.base64_hmac: "a8aa203e01ae547e15520509239f54003f7479408c11ade3e3321f521877f9a3",
    crypto.salted_hmac: "8ff2a08925946b3aa374f13e85c03ba2fcc27804d1cfd63943884c733bccb39e",
    signing.b64_encode: "e66c58dcdad16550d7a525cf0d7bc178e0fabf96c8919f036f9c98034ce34044",
    signing.b62_encode: "8887fb7cfbcbde7571b7d843237e6e41379c472e811a582705b2d85984f60114",
    signing.JSONSerializer.dumps: (
        "a7db322737db76fbe23fc9b69ee19a24328e901dc6ac8c0550b81788d8c231e1"
    ),
}

NOW = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
VALUES = ["1", "42.3", str(10**12), "é ünïcode", "a:b:c", ""]
OBJECTS = [{"m": 1}, {"c": 7, "m": 10**12}, {"s": "é", "n": None, "l": [1, 2.5, True]}, []]


def test_the_mirrored_django_internals_are_those_it_was_written_against():
    changed = [
        f"{function.__module__}.{function.__qualname__}"
        for function, recorded in UPSTREAM.items()
        if hashlib.sha256(inspect.getsource(function).encode()).hexdigest() != recorded
    ]
    assert changed == [], (
        f"Django {django.get_version()} changed what apps/core/mirrors/django_signing.py mirrors"
    )


@pytest.mark.parametrize("secret", [None, "another key, é", b"a key in bytes"])
def test_tokens_are_what_djangos_signers_make_and_read(settings, secret):
    if secret:
        settings.SECRET_KEY = secret

    with time_machine.travel(NOW, tick=False):
        for salt in ("tenure.tracking.open", "a salt, é"):
            signer = signing.Signer(salt=salt)
            for value in VALUES:
                token = django_signing.sign(value, salt=salt)
                assert token == signer.sign(value)
                assert signer.unsign(token) == value
            for obj in OBJECTS:
                token = django_signing.sign_object(obj, salt=salt)
                assert token == signer.sign_object(obj, compress=False)
                assert signer.unsign_object(token) == obj
                stamped = django_signing.sign_object(obj, salt=salt, timestamped=True)
                assert stamped == signing.dumps(obj, salt=salt)
                assert signing.loads(stamped, salt=salt, max_age=60) == obj


def test_a_new_secret_key_signs_with_the_new_key(settings):
    before = django_signing.sign("1", salt="s")
    settings.SECRET_KEY = "rotated"
    settings.SECRET_KEY_FALLBACKS = ["x" * 50]

    after = django_signing.sign("1", salt="s")

    assert after != before
    assert after == signing.Signer(salt="s").sign("1")
