"""Twilio's webhooks: the signature check, status callbacks as
`IncomingEvent`s and what each status means, and the keywords of inbound
texts.

Twilio signs the exact public URL it called (query string included) and every
posted parameter with the account's auth token (`X-Twilio-Signature`). Behind
a TLS-terminating proxy the request reaches us as http, so the URL is rebuilt
from `PUBLIC_BASE_URL`, with the scheme the proxy reports in
`X-Forwarded-Proto`.
"""

import re
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, QueryDict
from twilio.request_validator import RequestValidator

from apps.messaging.models import Message, Suppression

from .events import IncomingEvent, Outcome
from .models import Engagement, InboundSms, ProviderEvent

SIGNATURE_HEADER = "HTTP_X_TWILIO_SIGNATURE"

# Carrier-compliance keywords (case-insensitive, the whole message).
OPT_OUT_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"}
)
OPT_IN_KEYWORDS = frozenset({"start", "yes", "unstop"})
HELP_KEYWORDS = frozenset({"help", "info"})

# Free text that reads like a request to stop: not acted on (a person must
# read it), but flagged for review in the admin.
_STOP_INTENT = re.compile(
    r"\b(stop|unsubscribe|opt[\s-]*out|remove me|take me off|leave me alone|"
    r"no more (texts?|messages?|sms)|(don'?t|do not|never) (text|message|contact|sms|send))",
    re.IGNORECASE,
)
# Error codes of a status callback that say the number can never receive SMS.
INVALID_NUMBER_CODES = frozenset({"30005", "30006"})


def public_url(request: HttpRequest) -> str:
    """The URL Twilio called, as it signed it."""
    base = settings.PUBLIC_BASE_URL
    scheme, _, rest = base.partition("://")
    forwarded = request.META.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https"):
        scheme = forwarded
    return f"{scheme}://{rest}{request.get_full_path()}"


def verify(request: HttpRequest) -> str | None:
    """None when the request carries Twilio's valid signature over its public
    URL and all its POST parameters; otherwise what is wrong."""
    token = settings.TWILIO_AUTH_TOKEN
    if not token:
        return "TWILIO_AUTH_TOKEN is not set: webhooks cannot be verified"
    signature = request.META.get(SIGNATURE_HEADER, "")
    if not signature:
        return "missing X-Twilio-Signature header"
    if not RequestValidator(token).validate(public_url(request), request.POST, signature):
        return "invalid signature"
    return None


def params_dict(post: QueryDict) -> dict:
    """Every posted parameter (repeated ones as lists), for the payload."""
    return {key: (values[0] if len(values) == 1 else values) for key, values in post.lists()}


def status_event(post: QueryDict, *, received_at: datetime) -> IncomingEvent:
    """A status callback as an event; ValueError names a missing parameter."""
    sid = post.get("MessageSid") or post.get("SmsSid") or ""
    status = (post.get("MessageStatus") or post.get("SmsStatus") or "").strip().lower()
    if not sid:
        raise ValueError("MessageSid: missing")
    if not status:
        raise ValueError("MessageStatus: missing")
    if len(sid) > 64 or len(status) > 40:
        raise ValueError("MessageSid or MessageStatus: too long")
    return IncomingEvent(
        provider=ProviderEvent.Provider.TWILIO,
        event_id=f"{sid}:{status}",
        kind=status,
        occurred_at=received_at,
        payload=params_dict(post),
        address=(post.get("To") or "")[:32],
        provider_message_id=sid,
    )


def outcome(row: ProviderEvent) -> Outcome:
    """What a stored status callback means for its message and number."""
    kind = row.kind
    code = str(row.payload.get("ErrorCode") or "")
    if kind == "sent":
        return Outcome(status=Message.Status.SENT)
    if kind in ("delivered", "read"):
        return Outcome(engagement=Engagement.Kind.DELIVERED, status=Message.Status.DELIVERED)
    if kind in ("undelivered", "failed"):
        detail = f"{kind}" + (f" (error {code})" if code else "")
        return Outcome(
            engagement=Engagement.Kind.FAILED,
            status=Message.Status.FAILED,
            detail=detail,
            suppress=Suppression.Reason.INVALID if code in INVALID_NUMBER_CODES else None,
        )
    return Outcome()  # queued, sending, accepted, scheduled...: nothing to act on


def keyword(body: str) -> str | None:
    """The InboundSms kind a keyword text is (opt out, opt in, help), or None
    for any other text. The whole message is the keyword, whatever its case,
    surrounding spaces or final punctuation."""
    word = body.strip().rstrip(".!").strip().lower()
    if word in OPT_OUT_KEYWORDS:
        return InboundSms.Kind.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return InboundSms.Kind.OPT_IN
    if word in HELP_KEYWORDS:
        return InboundSms.Kind.HELP
    return None


def asks_to_stop(body: str) -> bool:
    return bool(_STOP_INTENT.search(body))
