"""SendGrid, through the real SDK (`sendgrid.SendGridAPIClient`).

The SDK sets its host when it is built (changing it later does nothing), so
the host comes from SENDGRID_API_HOST at construction; it sets no timeout, so
`client.client.timeout` is set here. Success is 202 with an empty body and
the message's id in the `X-Message-Id` header; our own message id also rides
along in `custom_args`, which SendGrid echoes on every webhook event, so
tracking can find the message even before it knows SendGrid's id.

The SDK's HTTP client (python_http_client) builds a urllib opener and opens
a new connection for every call, which cost the call's two ends more CPU
than the rest of it; ours is the same client (the SDK's URL, headers, JSON,
response and errors) sending over one kept-alive connection per thread, each
request in one write: `PooledClient` over `KeptAlive`, a mirror of those
libraries' internals kept in apps/core/mirrors/sendgrid_transport.py (what
it saves is measured there).
"""

import functools
import http.client
import time
from collections.abc import Sequence
from email.utils import parseaddr

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from apps.core.mirrors.sendgrid_transport import Call, KeptAlive, PooledClient
from apps.messaging.models import Message

from .base import (
    OutcomeUnknownError,
    PermanentError,
    Provider,
    TransientError,
    list_unsubscribe_headers,
    require_body,
)

# The key our message id travels under in custom_args (and comes back under
# in the event webhook's JSON).
CUSTOM_ARG_MESSAGE_ID = "tenure_message_id"
# 408 (the request timed out at SendGrid) and 429 may go through later; so
# may any 5xx. Every other 4xx is about the request itself.
RETRYABLE_4XX = {408, 429}


class SendGridProvider(Provider):
    name = "sendgrid"

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        if not settings.SENDGRID_API_KEY:
            raise ImproperlyConfigured("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")
        host = settings.SENDGRID_API_HOST.rstrip("/")
        self.client = SendGridAPIClient(api_key=settings.SENDGRID_API_KEY, host=host)
        sdk = self.client.client
        self.client.client = PooledClient(
            connections=KeptAlive(host),
            host=sdk.host,
            request_headers=sdk.request_headers,
            version=sdk._version,
            timeout=settings.DELIVERY_TIMEOUT_S,
        )
        self.rate_per_second = settings.SENDGRID_RATE_PER_SECOND

    def send(self, message: Message) -> str:
        (answer,) = self.send_many([message])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def send_many(self, messages: Sequence[Message]) -> list[str | Exception]:
        """Every request written first, each on a kept-alive connection of
        its own, then the answers read in turn: the calls wait on SendGrid
        together without a thread each (whose wake-ups and hand-offs of the
        interpreter cost more CPU than the calls); `send` is a group of one.
        The SDK's client for /mail/send builds the requests and reads the
        answers (SendGridAPIClient.send would only call its `post`).

        A call that fails while its request is being written (the connect,
        the TLS handshake, the one write) never reached SendGrid whole, so
        it may be retried (`failure`); once it is written, no answer means
        it may have been sent (`unanswered`). SendGrid's mail/send takes no
        idempotency key that would make sending it again safe."""
        endpoint = self.client.client.mail.send
        calls: list[Call | Exception] = []
        for slot, message in enumerate(messages):
            try:
                require_body(self.name, message)
                body = self.payload(message)
                calls.append(endpoint.start("POST", request_body=body, slot=slot))
            except Exception as exc:
                calls.append(self.failure(exc))
        answers: list[str | Exception] = []
        for call in calls:
            if isinstance(call, Exception):
                answers.append(call)
                continue
            try:
                answers.append(_message_id(endpoint.finish(call)))
            except Exception as exc:
                answers.append(self.unanswered(exc, call))
        return answers

    def failure(self, exc: Exception) -> Exception:
        """What a call that failed before its request was written whole
        raises: a network error (refused, unreachable, no DNS answer, a TLS
        handshake or a connect that failed or timed out, a connection the
        peer closed before the write went through) is transient: SendGrid
        cannot act on a request it never had whole. Anything else as it is."""
        if isinstance(exc, HTTPError):
            return self.error(exc)
        if isinstance(exc, OSError | http.client.HTTPException):
            return TransientError(f"sendgrid: {type(exc).__name__}: {exc} (nothing sent)")
        return exc

    def unanswered(self, exc: Exception, call: "Call") -> Exception:
        """What a call whose request was written raises: an HTTP error by its
        status; a read timeout, a reset or closed connection, an answer that
        cannot be read: SendGrid may have the message, so its outcome is
        unknown (never retried by itself). Anything else as it is."""
        if isinstance(exc, HTTPError):
            return self.error(exc)
        if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
            what = f"read timeout after {call.timeout:.1f} s"
        elif isinstance(exc, OSError | http.client.HTTPException):
            what = f"{type(exc).__name__} after the request was written: {exc}"
        else:
            return exc
        return OutcomeUnknownError(f"sendgrid: {what}: may have reached SendGrid")

    def payload(self, message: Message) -> dict:
        """The v3 /mail/send body for one message (built as a dict: the
        SDK's Mail helper would only build the same dict)."""
        from_name, from_email = _parsed(message.from_address or settings.DEFAULT_FROM_EMAIL)
        content = []
        # Order matters to SendGrid: text/plain before text/html.
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        body = {
            "personalizations": [{"to": [{"email": message.to_address}]}],
            "from": {"email": from_email, **({"name": from_name} if from_name else {})},
            "subject": message.subject,
            "content": content,
            "custom_args": {CUSTOM_ARG_MESSAGE_ID: str(message.pk)},
            "categories": [message.category],
            # Opens and clicks are tracked by our own signed links (apps.tracking);
            # SendGrid's rewriting would wrap them a second time.
            "tracking_settings": {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
            },
        }
        if message.reply_to:
            reply_name, reply_email = _parsed(message.reply_to)
            body["reply_to"] = {
                "email": reply_email,
                **({"name": reply_name} if reply_name else {}),
            }
        if headers := list_unsubscribe_headers(message):
            body["headers"] = headers
        return body

    @staticmethod
    def error(exc: HTTPError) -> Exception:
        status = getattr(exc, "status_code", None)
        detail = _body_text(exc)
        text = f"sendgrid: HTTP {status}: {detail}" if detail else f"sendgrid: HTTP {status}"
        if status is not None and (status >= 500 or status in RETRYABLE_4XX):
            return TransientError(text, retry_after=_reset_wait(exc) if status == 429 else None)
        return PermanentError(text, code=status)


def _message_id(response: Response) -> str:
    return response.headers.get("X-Message-Id", "") or ""


@functools.lru_cache(maxsize=256)
def _parsed(address: str) -> tuple[str, str]:
    """`parseaddr`, once per address: a send's sender (and reply-to) is
    nearly always one of a few, and parsing it cost more than the JSON."""
    return parseaddr(address)


def _body_text(exc: HTTPError) -> str:
    """SendGrid's error list, flattened to one line ("field: message; ...")."""
    try:
        errors = exc.to_dict.get("errors") or []
        parts = [
            f"{e['field']}: {e['message']}" if e.get("field") else e["message"] for e in errors
        ]
        return "; ".join(parts)
    except Exception:
        raw = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
        return " ".join(raw.split())[:300]


def _reset_wait(exc: HTTPError) -> float | None:
    """Seconds until `X-RateLimit-Reset` (epoch seconds, SendGrid's clock)."""
    try:
        reset = float(exc.headers.get("X-RateLimit-Reset"))
    except (AttributeError, TypeError, ValueError):
        return None
    return max(0.0, reset - time.time())
