"""The API key, wherever a client puts it.

Segment's SDKs send the write key as Basic auth's user name with an empty
password (`Authorization: Basic base64("<key>:")`) and again as `writeKey`
in the JSON body; Tenure's own clients send `Authorization: Bearer <key>`.
Each is an authentication callable of ninja's, tried in that order (header
first: the body is read for its key only when no header key was valid), and
the first live key wins. All look up the same hashed `ApiKey`.

A header or a field that cannot hold a key (malformed base64, a key that is
not text) is simply no key: the answer is the 401, never a 500.
"""

import base64
import binascii
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBasicAuth, HttpBearer

from .. import services
from ..models import ApiKey
from . import wire

# Keys are 43 characters; anything much longer is not one (and is not hashed).
_MAX_KEY_LENGTH = 200


def key_authenticate(key: Any) -> ApiKey | None:
    """The live ApiKey for `key`, or None for anything that cannot be one."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LENGTH:
        return None
    try:
        key.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON body
        return None
    return services.api_key_authenticate(key, now=timezone.now())


def basic_user(header: str) -> str | None:
    """The user name of a Basic `Authorization` header, or None if it is not
    one. Missing base64 padding is forgiven; the password is ignored."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    encoded = encoded.strip()
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        user = decoded.decode("utf-8").partition(":")[0]
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return user or None


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`."""

    openapi_description = "`Authorization: Bearer <key>`, a key from `manage.py create_api_key`."

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return key_authenticate(token)


class WriteKeyBasic(HttpBasicAuth):
    """Segment's write key: Basic auth with the key as user name."""

    openapi_description = (
        'Segment\'s write-key convention: `Authorization: Basic base64("<key>:")`, '
        "the API key as user name and an empty (or any) password. Segment's and "
        "RudderStack's SDKs send it as they are. The ingestion calls also take the "
        "key as `writeKey` in the JSON body (which OpenAPI cannot express as a scheme)."
    )

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        header = request.headers.get("Authorization")
        user = basic_user(header) if header else None
        return key_authenticate(user) if user else None

    def authenticate(self, request: HttpRequest, username: str, password: str) -> ApiKey | None:
        return key_authenticate(username)  # ninja's hook; __call__ decodes the header itself


class WriteKeyInBody:
    """`writeKey` in the JSON body (after gzip). Not an OpenAPI security
    scheme (the document has none for a body field): it is described in the
    Basic scheme and the bodies.

    A body that cannot be read (not JSON, over its limit) is answered as such
    (400, 413) when the request has no `Authorization` header, since the body
    was its only place for a key (analytics.js sends it so): "your key is
    wrong" would send its author looking in the wrong place. With a header
    whose key was not valid, the answer is the 401 for that key."""

    def __init__(self, limit: wire.Limit) -> None:
        self.limit = limit

    def __call__(self, request: HttpRequest) -> ApiKey | None:
        try:
            body = wire.payload(request, limit=self.limit)
        except HttpError:
            if "HTTP_AUTHORIZATION" in request.META:
                return None
            raise
        return key_authenticate(body.get("writeKey"))


def ingestion_auth(limit: wire.Limit) -> list:
    """The callables for an ingestion endpoint whose body is held to `limit`."""
    return [WriteKeyBasic(), ApiKeyAuth(), WriteKeyInBody(limit)]
