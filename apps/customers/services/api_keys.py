"""API keys: created once, stored hashed, checked on every call."""

import secrets
from datetime import datetime

from ..models import ApiKey

API_KEY_PREFIX = "tk_"


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    """A new key; the plain key is returned once and never stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(name=name, prefix=key[:10], key_hash=ApiKey.hash(key))
    return api_key, key


def api_key_authenticate(key: str, *, now: datetime) -> ApiKey | None:
    """The live key matching `key`, or None. `last_used_at` is refreshed at most
    once a minute, so authentication is not a write on every request."""
    api_key = ApiKey.objects.filter(key_hash=ApiKey.hash(key), revoked_at__isnull=True).first()
    if api_key and (
        api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60
    ):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


def api_key_revoke(api_key: ApiKey, *, now: datetime) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
