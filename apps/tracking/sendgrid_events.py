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
from datetime import UTC, datetime
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

from .events import IncomingEvent, Outcome
from .models import Engagement, ProviderEvent

SIGNATURE_HEADER = "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE"
TIMESTAMP_HEADER = "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP"
# The custom arg the SendGrid provider puts on every message it sends.
MESSAGE_ID_ARG = CUSTOM_ARG_MESSAGE_ID
MAX_TEXT = 254


class PayloadError(ValueError):
    """The body is not a JSON array of events (answered with 400)."""


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)


def verify(body: bytes, *, signature: str, timestamp: str, public_key: str) -> str | None:
    """None when `body` carries a valid signature; otherwise what is wrong, in
    words. The SDK's EventWebhook loads the key; the signature is checked over
    the raw bytes as received (the SDK's `verify_signature` takes text, which
    a body that is not UTF-8 could not even be turned into)."""
    if not public_key:
        return "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: events cannot be verified"
    if not signature or not timestamp:
        return "missing X-Twilio-Email-Event-Webhook-Signature or -Timestamp header"
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
    JSON array of objects; an object that is not a valid event is returned
    with its `error` (stored, never processed) rather than failing the batch."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PayloadError(f"body must be a JSON array of events, got {type(data).__name__}")
    if b"\\u0000" in body:
        data = _without_nul(data)  # PostgreSQL text and jsonb cannot hold NUL
    events = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise PayloadError(f"[{index}]: must be an object, got {type(item).__name__}")
        events.append(_incoming(item, received_at=received_at))
    return events


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _incoming(item: dict, *, received_at: datetime) -> IncomingEvent:
    try:
        event = _Event.model_validate(item)
    except ValidationError as exc:
        kind = item.get("event")
        return IncomingEvent(
            provider=ProviderEvent.Provider.SENDGRID,
            event_id=_event_id(item),
            kind=kind[:40] if isinstance(kind, str) and kind else "invalid",
            occurred_at=received_at,
            payload=item,
            address=str(item.get("email") or "")[:MAX_TEXT],
            error=f"refused: {describe_errors(exc)}",
        )
    return IncomingEvent(
        provider=ProviderEvent.Provider.SENDGRID,
        event_id=event.sg_event_id or _event_id(item),
        kind=event.event,
        occurred_at=datetime.fromtimestamp(event.timestamp, tz=UTC),
        payload=item,
        address=event.email.strip().lower(),
        provider_message_id=event.sg_message_id or "",
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
