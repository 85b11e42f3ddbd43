"""Twilio SMS, through the real SDK (`twilio.rest.Client`).

The SDK's default http client has no timeout; ours has one and, when
TWILIO_API_BASE_URL is set, sends every request for any Twilio host (api,
messaging, an edge or region host that TWILIO_EDGE / TWILIO_REGION produce)
to that base URL instead: that is how a test or a staging setup points the
real SDK at a fake. Every message asks Twilio for status callbacks at
PUBLIC_BASE_URL/webhooks/twilio/status.

A call that fails before its request is written (refused, DNS, a TLS
handshake, a connect timeout) is retried; once any of it may have been
written, a failure leaves the message's outcome unknown: Twilio's Messages
API takes no idempotency key (its API definition, from which the SDK is
generated, has one for Payments and a few others, none for Messages), so a
second create could send a second SMS. Which side of the write a failure
fell on is known from the connections themselves: requests' adapter made
of urllib3 connections that note when a request's first byte may have gone
out, a mirror of urllib3's internals kept in apps/core/mirrors/
urllib3_tracking.py for correctness (at most once on a timeout), not speed.
"""

import os
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import requests

# Client.api imports Twilio's whole REST API (60-80 ms of CPU) on its first
# use: imported with this module instead, so that a Celery worker's main
# process loads it once for all its prefork children (import_configured).
import twilio.rest.api  # noqa: F401
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from apps.core.mirrors.urllib3_tracking import TrackedAdapter, nothing_written, request_phase_reset
from apps.messaging.models import Message, Suppression

from .base import OutcomeUnknownError, PermanentError, Provider, TransientError, require_body

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
RATE_LIMITED_CODES = {20429}
INVALID_NUMBER = 21211  # the To number is not a valid phone number
OPTED_OUT = 21610  # the recipient replied STOP to this sender
# 21408: no permission to send to that region; 21614: not a mobile number.
# Both are about the recipient: retrying can never work.
PERMANENT_CODES = {INVALID_NUMBER, OPTED_OUT, 21408, 21614}


class TenureTwilioHttpClient(TwilioHttpClient):
    """The SDK's http client with a timeout, an optional base URL for every
    Twilio host, and the last response's headers kept per thread (the SDK's
    exceptions drop them, and Retry-After lives there)."""

    def __init__(self, *, timeout: float, base_url: str = "", pool_size: int = 10) -> None:
        super().__init__(timeout=timeout)
        self.base = urlsplit(base_url.rstrip("/")) if base_url else None
        self._local = threading.local()
        # A kept-alive connection for each delivery thread: the SDK's pool
        # keeps cpu_count + 4 (6 on two cores) and closes the rest after
        # each call, so 8 threads opened 2 connections (TLS included) a round.
        adapter = TrackedAdapter(pool_maxsize=pool_size)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # requests reads the environment's proxy and CA bundle variables at
        # every call (a fifth of a call's CPU): read them once, here.
        self.session.trust_env = False
        self.proxy = requests.utils.get_environ_proxies(base_url or "https://api.twilio.com")
        self.session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )

    def rewrite(self, url: str) -> str:
        if self.base is None:
            return url
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host != "twilio.com" and not host.endswith(".twilio.com"):
            return url
        path = self.base.path + parts.path
        return urlunsplit((self.base.scheme, self.base.netloc, path, parts.query, parts.fragment))

    def request(self, method, url, *args, **kwargs):
        self._local.headers = {}
        request_phase_reset()
        response = super().request(method, self.rewrite(url), *args, **kwargs)
        self._local.headers = response.headers or {}
        return response

    def last_headers(self) -> dict:
        return getattr(self._local, "headers", {}) or {}


class TwilioProvider(Provider):
    name = "twilio"

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        if not (settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN):
            raise ImproperlyConfigured(
                "SMS_PROVIDER=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        if not (settings.TWILIO_FROM_NUMBER or settings.TWILIO_MESSAGING_SERVICE_SID):
            raise ImproperlyConfigured(
                "SMS_PROVIDER=twilio needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
            )
        self.http = TenureTwilioHttpClient(
            timeout=settings.DELIVERY_TIMEOUT_S,
            base_url=settings.TWILIO_API_BASE_URL,
            pool_size=settings.DELIVERY_CONCURRENCY,
        )
        self.client = Client(
            settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=self.http
        )
        self.rate_per_second = settings.TWILIO_RATE_PER_SECOND

    def params(self, message: Message) -> dict:
        params = {
            "to": message.to_address,
            "body": message.text,
            "status_callback": settings.PUBLIC_BASE_URL + STATUS_CALLBACK_PATH,
        }
        # A Messaging Service picks the sender from its pool (and handles
        # STOP itself); otherwise the one configured number sends.
        if settings.TWILIO_MESSAGING_SERVICE_SID:
            params["messaging_service_sid"] = settings.TWILIO_MESSAGING_SERVICE_SID
        else:
            params["from_"] = settings.TWILIO_FROM_NUMBER
        return params

    def send(self, message: Message) -> str:
        require_body(self.name, message)
        try:
            created = self.client.messages.create(**self.params(message))
        except TwilioRestException as exc:
            raise self.error(exc.status, exc.code, exc.msg) from None
        except TwilioServiceException as exc:
            raise self.error(exc.status, exc.code, exc.detail or exc.title) from None
        except (requests.RequestException, OSError) as exc:
            raise self.unanswered(exc) from None
        return created.sid or ""

    def unanswered(self, exc: Exception) -> Exception:
        """A network failure: transient when nothing was written; otherwise
        (a read timeout, a connection reset or closed after the write, an
        answer that could not be read) Twilio may have created the message."""
        if nothing_written(exc):
            return TransientError(f"twilio: {type(exc).__name__}: {exc} (nothing sent)")
        if isinstance(exc, requests.ReadTimeout):
            what = f"read timeout after {float(self.http.timeout):.1f} s"
        else:
            what = f"{type(exc).__name__} after the request was written: {exc}"
        return OutcomeUnknownError(f"twilio: {what}: may have reached Twilio")

    def error(self, status: int, code, text: str) -> Exception:
        described = f"twilio: HTTP {status} code {code}: {' '.join(str(text).split())}"
        if status == 429 or code in RATE_LIMITED_CODES:
            return TransientError(described, retry_after=_retry_after(self.http.last_headers()))
        if status >= 500 and code not in PERMANENT_CODES:
            return TransientError(described)
        if code == INVALID_NUMBER:
            return PermanentError(described, code=code, suppress=Suppression.Reason.INVALID)
        if code == OPTED_OUT:
            return PermanentError(
                described, code=code, suppress=Suppression.Reason.SMS_OPT_OUT, revoke_consent=True
            )
        return PermanentError(described, code=code)


def _retry_after(headers) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    value = headers.get("Retry-After") if headers else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
