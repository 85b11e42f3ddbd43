"""What every provider promises: `send(message)` returns the provider's id for
the message, or raises an error that says whether trying again can help
(`TransientError`: nothing was sent, `PermanentError`: it never can,
`OutcomeUnknownError`: it may have been sent, so trying again could send it
twice); a provider that can have several calls in flight from one thread
also offers `send_many`.

The delivery service (apps/messaging/delivery/) owns everything around the
call: the claim, the attempt count, the backoff, the rate limit and recording
the result. A provider only turns one stored `Message` into one request and
the answer into an id or an error, so local providers (console, locmem) run
the same code path as SendGrid and Twilio.
"""

from collections.abc import Sequence

from django.conf import settings

from apps.messaging.links import unsubscribe_url
from apps.messaging.models import Category, Channel, Message, Suppression


class ProviderError(Exception):
    """A send that did not go through. `str(error)` is what the message's
    `error` field records, so it names the provider and the reason."""


class TransientError(ProviderError):
    """Nothing was sent and trying again later may work: an HTTP error answer
    (rate limits, 5xx), or a failure before the request could reach the
    provider (a refused connection, a DNS failure, a TLS handshake that
    failed, a connect timeout). `retry_after` (seconds) is the provider's own
    wait when it said one (SendGrid's X-RateLimit-Reset, Twilio's
    Retry-After). Never raise it once the request may have reached the
    provider: that is `OutcomeUnknownError`."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknownError(ProviderError):
    """The request may have reached the provider but no answer came back (a
    read timeout, a connection reset or closed after the request was
    written, an answer that could not be read): the message may have been
    sent. Delivery marks it `unknown`, for review, and never sends it again
    by itself, as for a worker killed mid-call; the provider's own events
    (SendGrid's carry our message id) can still settle it. Neither SendGrid's
    v3 mail/send nor Twilio's Messages API takes an idempotency key that
    would make a retry safe (README, "Delivery")."""


class PermanentError(ProviderError):
    """Trying again can never work (a bad address, a blocked recipient, a
    refused request). What the answer tells us about the address travels with
    the error and is recorded with the failure, in the same transaction:
    `suppress` adds the address to the suppression list for that reason;
    `revoke_consent` also appends a revocation to the customer's consent
    ledger (an SMS recipient who replied STOP)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        suppress: Suppression.Reason | None = None,
        revoke_consent: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.suppress = suppress
        self.revoke_consent = revoke_consent


class Provider:
    """Base class. A provider has a `name` (stored on each message it sends),
    serves one `channel`, and has `rate_per_second`, its account's limit
    across all workers (0: none, for the local providers)."""

    name = ""
    rate_per_second = 0.0

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def send(self, message: Message) -> str:
        """Send `message` once; return the provider's id for it."""
        raise NotImplementedError

    def send_many(self, messages: Sequence[Message]) -> list[str | Exception] | None:
        """Send each message once, their calls in flight together from this
        thread, when the provider can: each one's id or the error its call
        raised (what `send` would raise), in order. None when it cannot:
        delivery then calls `send` from a thread per message."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.channel}>"


def require_body(provider: str, message: Message) -> None:
    """A message with nothing to say is refused before any request is made."""
    if not message.to_address:
        raise PermanentError(f"{provider}: the message has no recipient address")
    if message.channel == Channel.EMAIL and not (message.html or message.text):
        raise PermanentError(f"{provider}: the message has neither an HTML nor a text part")
    if message.channel == Channel.SMS and not message.text:
        raise PermanentError(f"{provider}: the message has no body")


def list_unsubscribe_headers(message: Message) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers for marketing email: the https one-click
    link (a POST to it unsubscribes at once, no cookies, no page), and a
    mailto: beside it when LIST_UNSUBSCRIBE_MAILTO is set. Transactional email
    carries none."""
    if message.channel != Channel.EMAIL or message.category != Category.MARKETING:
        return {}
    targets = [f"<{unsubscribe_url(message)}>"]
    if settings.LIST_UNSUBSCRIBE_MAILTO:
        mailto = settings.LIST_UNSUBSCRIBE_MAILTO.removeprefix("mailto:")
        targets.append(f"<mailto:{mailto}?subject=unsubscribe-{message.pk}>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
