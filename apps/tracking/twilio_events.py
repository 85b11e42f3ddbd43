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
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.http import HttpRequest, QueryDict
from twilio.request_validator import RequestValidator

from apps.messaging.models import Message, Suppression

from . import webhook_json
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
    """Every posted parameter (repeated ones as lists), for the payload, with
    NUL characters removed (PostgreSQL text and jsonb cannot hold them). The
    form parser has already read bytes that are not UTF-8, and
    percent-escapes that are not valid, as U+FFFD."""
    return {
        webhook_json.safe_text(key): (
            webhook_json.safe_text(values[0])
            if len(values) == 1
            else [webhook_json.safe_text(v) for v in values]
        )
        for key, values in post.lists()
    }


# Twilio's ids: two letters and 32 hex digits; any letters and digits up to
# the column's 64 are accepted (test numbers, other id families).
_SID = re.compile(r"[A-Za-z0-9]{1,64}")
_STATUS = re.compile(r"[a-z_-]{1,40}")
# Numbers are E.164 (16 characters with the +), short codes, alphanumeric
# sender ids or channel addresses ("whatsapp:+1415..."): all fit in 32.
MAX_NUMBER = 32
# An SMS Twilio relays is at most 1,600 characters (it joins the segments);
# WhatsApp allows 4,096. Longer cannot come from Twilio.
MAX_BODY = 4096


def _field(post: QueryDict, *names: str, required: bool = True) -> str:
    """The first of `names` posted (a parameter and its older alias); a
    ValueError names it when it is missing or holds a NUL (no identifier
    Twilio sends does: it is not Twilio's)."""
    value = next((post.get(name) for name in names if post.get(name)), "")
    if not value and required:
        raise ValueError(f"{names[0]}: missing")
    if "\x00" in value:
        raise ValueError(f"{names[0]}: contains a NUL character")
    return value


def _number(post: QueryDict, name: str, *, required: bool) -> str:
    number = _field(post, name, required=required).strip()
    if len(number) > MAX_NUMBER:
        raise ValueError(f"{name}: longer than {MAX_NUMBER} characters")
    return number


def _sid(post: QueryDict) -> str:
    sid = _field(post, "MessageSid", "SmsSid")
    if not _SID.fullmatch(sid):
        raise ValueError("MessageSid: must be 1 to 64 letters and digits")
    return sid


def status_event(post: QueryDict, *, received_at: datetime) -> IncomingEvent:
    """A status callback as an event; ValueError names a missing or invalid
    parameter."""
    sid = _sid(post)
    status = _field(post, "MessageStatus", "SmsStatus").strip().lower()
    if not _STATUS.fullmatch(status):
        raise ValueError("MessageStatus: must be 1 to 40 letters, '-' or '_'")
    to = _number(post, "To", required=False)
    return IncomingEvent(
        provider=ProviderEvent.Provider.TWILIO,
        event_id=f"{sid}:{status}",
        kind=status,
        occurred_at=received_at,
        payload=params_dict(post),
        address=to,
        provider_message_id=sid,
    )


@dataclass(frozen=True)
class InboundText:
    """An inbound SMS as posted: its identifiers checked, its text as it can
    be stored."""

    sid: str
    number: str
    to: str
    body: str
    params: dict


def inbound_text(post: QueryDict) -> InboundText:
    """The fields of an inbound SMS; ValueError names a missing or invalid one.

    The text is a person's: NUL characters in it are removed, not refused
    (some handsets and gateways put one where GSM-7 has '@', whose code is 0;
    refusing would lose a text Twilio already accepted, perhaps a STOP), and
    the rest is kept as sent. Identifiers (sid, numbers) are Twilio's own and
    are refused when odd."""
    sid = _sid(post)
    number = _number(post, "From", required=True)
    to = _number(post, "To", required=False)
    body = webhook_json.safe_text(post.get("Body") or "")
    if len(body) > MAX_BODY:
        raise ValueError(f"Body: longer than {MAX_BODY} characters")
    return InboundText(sid=sid, number=number, to=to, body=body, params=params_dict(post))


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
