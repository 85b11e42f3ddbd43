"""SendGrid's event webhook: verification of the signed raw body, the events
of a batch as `IncomingEvent`s, and what each event type means.

SendGrid signs `timestamp + body` with ECDSA P-256 (headers
`X-Twilio-Email-Event-Webhook-Signature` / `-Timestamp`); the public key is
`SENDGRID_WEBHOOK_PUBLIC_KEY` (base64 DER, as SendGrid shows it). Events come
as a JSON array, are retried for 24 hours and can repeat (`sg_event_id`). Our
`custom_args` come back as top-level keys: `tenure_message_id` names our
message, except on some asynchronous bounces, where `sg_message_id` (the
`X-Message-Id` of the send, plus a suffix) is matched instead.
"""

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sendgrid.helpers.eventwebhook import EventWebhook

from apps.customers.schemas import describe_errors
from apps.messaging.models import Message, Suppression
from apps.messaging.providers.sendgrid import CUSTOM_ARG_MESSAGE_ID

from . import webhook_json
from .events import IncomingEvent, Outcome
from .models import Engagement, ProviderEvent

SIGNATURE_HEADER = "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE"
TIMESTAMP_HEADER = "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP"
# The custom arg the SendGrid provider puts on every message it sends.
MESSAGE_ID_ARG = CUSTOM_ARG_MESSAGE_ID
MAX_TEXT = 254
# How far ahead of our clock a signed timestamp may be (clocks differ a little).
MAX_AHEAD = timedelta(minutes=5)


class PayloadError(ValueError):
    """The body is not a JSON array of events (answered with 400)."""


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)


def verify(
    body: bytes,
    *,
    signature: str,
    timestamp: str,
    public_key: str,
    now: datetime,
    max_age: timedelta,
    max_ahead: timedelta = MAX_AHEAD,
) -> str | None:
    """None when `body` carries a valid signature made within the window
    (`max_age` back, `max_ahead` ahead of `now`); otherwise what is wrong, in
    words. The SDK's EventWebhook loads the key; the signature is checked over
    the raw bytes as received (the SDK's `verify_signature` takes text, which
    a body that is not UTF-8 could not even be turned into).

    The window refuses a captured post replayed later. It must still take
    SendGrid's own retries: they come for up to 24 hours after the event and
    nothing in SendGrid's documentation says a retry is signed anew, so one
    may carry its first attempt's timestamp (SENDGRID_WEBHOOK_MAX_AGE_S,
    25 hours by default). A replay inside the window stores nothing new: events
    are stored once per `sg_event_id`."""
    if not public_key:
        return "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: events cannot be verified"
    if not signature or not timestamp:
        return "missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp header"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "X-Twilio-Email-Event-Webhook-Timestamp: not a Unix time in seconds"
    try:
        key = _verifier(public_key).public_key
    except (ValueError, TypeError):
        return "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key"
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve (ECDSA) public key"
    try:
        decoded = base64.b64decode(signature, validate=True)
        key.verify(decoded, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError):
        return "malformed signature"
    except InvalidSignature:
        return "invalid signature"
    age = now.timestamp() - int(timestamp)
    if age > max_age.total_seconds():
        return (
            f"X-Twilio-Email-Event-Webhook-Timestamp: signed {int(age)} s ago, more than the "
            f"{int(max_age.total_seconds())} s accepted (a replay?)"
        )
    if -age > max_ahead.total_seconds():
        return (
            f"X-Twilio-Email-Event-Webhook-Timestamp: {int(-age)} s in the future, more than "
            f"the {int(max_ahead.total_seconds())} s of clock difference accepted"
        )
    return None


class _Event(BaseModel):
    """The fields every SendGrid event has; the rest are kept in the payload."""

    model_config = ConfigDict(extra="allow")

    event: str = Field(min_length=1, max_length=40)
    timestamp: int = Field(gt=0, lt=10**10)
    email: str = Field(default="", max_length=MAX_TEXT)
    sg_event_id: str | None = Field(default=None, max_length=200)
    sg_message_id: str | None = Field(default=None, max_length=200)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _whole_seconds(cls, value: Any) -> Any:
        # Unix seconds; a float is accepted and truncated.
        return int(value) if isinstance(value, float) else value


def parse(body: bytes, *, received_at: datetime) -> list[IncomingEvent]:
    """The batch's events, in order. Raises PayloadError when the body is not a
    JSON array. An item that is not a valid event (not an object, a missing
    or odd field, NaN, 1e400, a lone surrogate, deep nesting, an over-long
    string) is returned with its `error` (stored, never processed) rather
    than failing the batch, which SendGrid would retry for 24 hours."""
    try:
        items = list(webhook_json.array_items(body))
    except webhook_json.NotAnArray as exc:
        raise PayloadError(str(exc)) from None
    return [_incoming(item, received_at=received_at) for item in items]


def _incoming(item: webhook_json.Item, *, received_at: datetime) -> IncomingEvent:
    problem, value = item.problem, item.value
    if not problem and not isinstance(value, dict):
        problem = f"[{item.index}]: must be an object, got {type(value).__name__}"
    if problem:
        return _unreadable(item, problem, received_at=received_at)
    try:
        event = _Event.model_validate(value)
    except ValidationError as exc:
        kind = value.get("event")
        return IncomingEvent(
            provider=ProviderEvent.Provider.SENDGRID,
            event_id=_event_id(value),
            kind=kind[:40] if isinstance(kind, str) and kind else "invalid",
            occurred_at=received_at,
            payload=value,
            address=str(value.get("email") or "")[:MAX_TEXT],
            error=f"refused: {describe_errors(exc)}",
        )
    return IncomingEvent(
        provider=ProviderEvent.Provider.SENDGRID,
        event_id=event.sg_event_id or _event_id(value),
        kind=event.event,
        occurred_at=datetime.fromtimestamp(event.timestamp, tz=UTC),
        payload=value,
        address=event.email.strip().lower(),
        provider_message_id=event.sg_message_id or "",
    )


def _unreadable(item: webhook_json.Item, problem: str, *, received_at: datetime) -> IncomingEvent:
    """An item that cannot be stored as it came: kept as (the start of) its
    raw text, known by its `sg_event_id` when that much is readable, else by
    its raw text, so a retried batch stores it once."""
    raw = webhook_json.safe_text(item.raw[: webhook_json.RAW_KEPT])
    value = item.value if isinstance(item.value, dict) else {}
    event_id = value.get("sg_event_id")
    if not (isinstance(event_id, str) and 0 < len(event_id) <= 200):
        event_id = "sha256:" + hashlib.sha256(item.raw.encode("utf-8", "replace")).hexdigest()
    kind = value.get("event")
    email = value.get("email")
    return IncomingEvent(
        provider=ProviderEvent.Provider.SENDGRID,
        event_id=webhook_json.safe_text(event_id),
        kind=webhook_json.safe_text(kind[:40]) if isinstance(kind, str) and kind else "invalid",
        occurred_at=received_at,
        payload={"unreadable_item": raw},
        address=webhook_json.safe_text(email[:MAX_TEXT]) if isinstance(email, str) else "",
        # A key with a NUL can be part of the path the problem names.
        error=f"refused: {webhook_json.safe_text(problem)}",
    )


def _event_id(item: dict) -> str:
    """An event without an `sg_event_id` is known by its content, so an exact
    repeat is still stored once."""
    if isinstance(item.get("sg_event_id"), str) and 0 < len(item["sg_event_id"]) <= 200:
        return item["sg_event_id"]
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def message_hint(payload: dict) -> int | None:
    """Our message id from the custom args, if present and well formed."""
    value = payload.get(MESSAGE_ID_ARG)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def send_id(sg_message_id: str) -> str:
    """The `X-Message-Id` a send returned, from an event's `sg_message_id`
    (`<X-Message-Id>.<filter and server suffix>`)."""
    return sg_message_id.split(".", 1)[0]


# dropped events name why; the address is suppressed for that reason.
_DROP_REASONS = (
    ("unsubscribed", Suppression.Reason.UNSUBSCRIBE),
    ("spam report", Suppression.Reason.COMPLAINT),
    ("invalid", Suppression.Reason.INVALID),
)


def _text(payload: dict, key: str, limit: int = 500) -> str:
    value = payload.get(key)
    return str(value)[:limit] if value is not None else ""


def outcome(row: ProviderEvent) -> Outcome:
    """What a stored SendGrid event means for its message and address."""
    payload = row.payload
    kind = row.kind
    agent = _text(payload, "useragent", 300)
    if kind == "processed":
        return Outcome(status=Message.Status.SENT)
    if kind == "deferred":
        return Outcome(engagement=Engagement.Kind.DEFERRED, detail=_text(payload, "response"))
    if kind == "delivered":
        return Outcome(engagement=Engagement.Kind.DELIVERED, status=Message.Status.DELIVERED)
    if kind == "open":
        machine = "provider: machine open" if payload.get("sg_machine_open") is True else ""
        return Outcome(
            engagement=Engagement.Kind.OPEN,
            status=Message.Status.OPENED,
            machine_reason=machine,
            user_agent=agent,
        )
    if kind == "click":
        return Outcome(
            engagement=Engagement.Kind.CLICK,
            status=Message.Status.CLICKED,
            url=_text(payload, "url", 4000),
            user_agent=agent,
        )
    if kind == "bounce":
        # "blocked" is a temporary refusal by the receiving server (SendGrid
        # does not suppress it either); a bounce proper is permanent.
        blocked = payload.get("type") == "blocked"
        return Outcome(
            engagement=Engagement.Kind.BOUNCE,
            status=Message.Status.BOUNCED,
            detail=_detail(payload),
            suppress=None if blocked else Suppression.Reason.BOUNCE,
        )
    if kind == "dropped":
        reason = _text(payload, "reason").lower()
        suppress = next(
            (why for marker, why in _DROP_REASONS if marker in reason), Suppression.Reason.BOUNCE
        )
        return Outcome(
            engagement=Engagement.Kind.DROPPED,
            status=Message.Status.BOUNCED,
            detail=_detail(payload),
            suppress=suppress,
        )
    if kind == "spamreport":
        return Outcome(
            engagement=Engagement.Kind.COMPLAINT,
            status=Message.Status.COMPLAINED,
            suppress=Suppression.Reason.COMPLAINT,
        )
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Outcome(
            engagement=Engagement.Kind.UNSUBSCRIBE,
            detail=kind,
            suppress=Suppression.Reason.UNSUBSCRIBE,
        )
    if kind == "group_resubscribe":
        return Outcome(engagement=Engagement.Kind.RESUBSCRIBE, lift_unsubscribe=True)
    return Outcome()  # a type we do not act on: kept in the payload


def _detail(payload: dict) -> str:
    parts = [_text(payload, key) for key in ("status", "reason", "type")]
    return " ".join(p for p in parts if p)[:500]
