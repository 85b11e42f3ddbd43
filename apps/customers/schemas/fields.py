"""The values a call is made of: ids, times, text and JSON PostgreSQL can
store, the kept part of an SDK's context; and the checks they share."""

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from pydantic import (
    AfterValidator,
    BeforeValidator,
    StringConstraints,
    WithJsonSchema,
)

from apps.core import jsonsafe

from ..models import CONTACT_FIELDS, Customer
from ..validation import validate_email, validate_phone, validate_timezone


def _id_to_str(value: Any) -> Any:
    # Segment allows numeric user ids; they are stored as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _parse_timestamp(value: Any) -> Any:
    """An ISO-8601 text (UTC when it names no offset), as an aware datetime.
    Python reads offsets up to ±23:59 and PostgreSQL only up to ±15:59; once
    in UTC any offset Python reads is stored as the moment it names. A
    datetime is what our own code passes (its `now`, which may be a simulated
    one) and is taken as it is. Whether the time is acceptable is decided
    once the client's clock is corrected (`_occurred_at`)."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string like 2026-01-31T09:30:00Z")
    try:
        value = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _parse_timestamp_in_window(value: Any) -> Any:
    """A timestamp that must lie in the ingestion window as sent (a consent
    call's), in UTC."""
    value = _parse_timestamp(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        problem = window_problem(value, "")
        if problem:
            raise ValueError(problem.removeprefix(": "))
        return value.astimezone(UTC)
    return value


def window_problem(value: datetime, field: str) -> str | None:
    """Why `value` is outside the ingestion window (`INGEST_TIMESTAMP_MIN` to
    `INGEST_TIMESTAMP_MAX_FUTURE_S` ahead of now), or None. The window is a
    rule of input, like a length, so the clock is read here."""
    # Compared before any conversion: year 9999 at -14:00 is past what a
    # Python datetime can hold in UTC, but comparing it is exact.
    earliest, ahead = _window()
    if value < earliest:
        return f"{field}: is before {earliest.isoformat()}, the earliest time accepted"
    latest = datetime.now(UTC) + ahead
    if value > latest:
        return (
            f"{field}: is more than {ahead.total_seconds():.0f} s ahead of now "
            f"({latest.isoformat(timespec='seconds')} at the latest)"
        )
    return None


@cache
def _window() -> tuple[datetime, timedelta]:
    """The window's settings, read once (a settings read per timestamp was a
    third of the check's cost); tests that change them clear this."""
    return settings.INGEST_TIMESTAMP_MIN, timedelta(seconds=settings.INGEST_TIMESTAMP_MAX_FUTURE_S)


@receiver(setting_changed)
def _window_changed(*, setting: str, **kwargs) -> None:
    if setting.startswith("INGEST_TIMESTAMP_"):
        _window.cache_clear()


def _storable_text(value: str) -> str:
    reason = jsonsafe.problem(value, "")
    if reason:
        raise ValueError(reason.removeprefix(": "))
    return value


# A text column's value: bounded, and free of what PostgreSQL cannot store.
StoredText = AfterValidator(_storable_text)

UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    BeforeValidator(_id_to_str),  # runs first: before-validators apply outermost-first
    # Segment SDKs send numbers too; the document says so (stored as text).
    WithJsonSchema(
        {
            "anyOf": [
                # Leading and trailing white space is dropped: one other character at least.
                {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
                {"type": "integer"},
            ],
            "title": "userId",
            "description": "The business's own user id; a number is stored as its text.",
        }
    ),
]
_TIME_DOC = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}
# A time in a Segment call: read as sent; when the call happened is checked
# once corrected by `sentAt` (_occurred_at).
ClientTime = Annotated[
    datetime | None,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema(
        {
            **_TIME_DOC,
            "description": "ISO-8601 (UTC when no offset is given). When the call happened "
            "(`timestamp`, else `originalTimestamp`) is corrected by `sentAt` for the "
            "client's clock, and must then lie from 1970-01-01 (INGEST_TIMESTAMP_MIN) to "
            "one day ahead of now (INGEST_TIMESTAMP_MAX_FUTURE_S).",
        }
    ),
]
Timestamp = Annotated[
    datetime | None,
    BeforeValidator(_parse_timestamp_in_window),
    WithJsonSchema(
        {
            **_TIME_DOC,
            "description": "ISO-8601 (UTC when no offset is given), from 1970-01-01 "
            "(INGEST_TIMESTAMP_MIN) to one day ahead of now (INGEST_TIMESTAMP_MAX_FUTURE_S).",
        }
    ),
]
AnonymousId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    BeforeValidator(_id_to_str),
]


def nullable_id_doc(title: str, description: str) -> dict:
    """The document of an id a call may leave out (or send as null)."""
    return {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
            {"type": "integer"},
            {"type": "null"},
        ],
        "title": title,
        "description": description,
    }


MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200)]

CONTACT_VALIDATORS = {
    "email": validate_email,
    "phone": validate_phone,
    "timezone": validate_timezone,
    "locale": lambda value: None,
}
# The columns' sizes: a longer value cannot be stored (PostgreSQL refuses it).
CONTACT_MAX_LENGTH = {f: Customer._meta.get_field(f).max_length for f in CONTACT_FIELDS}


def text_problem(value: str | None, field: str) -> None:
    # Inline first: a Python call per field per call would cost more than the
    # check (the ingestion hot path; see apps/core/jsonsafe.py).
    if value and ("\x00" in value or not value.isascii()):
        reason = jsonsafe.problem(value, field)
        if reason:
            raise ValueError(reason)


def _json_problem(value: dict, path: str) -> None:
    """Refuses a traits or properties object that cannot be stored (NUL,
    lone surrogates, NaN/Infinity, nesting past INGEST_JSON_MAX_DEPTH),
    naming the path inside it: `traits.a.b: ...`."""
    if value:
        reason = jsonsafe.problem(value, path)
        if reason:
            raise ValueError(reason)


# What is kept of an SDK's `context` on the event: what marketing uses (the
# visitor's language and zone, the device and app, the page and campaign it
# came from). The IP address and anything derived from it are not kept.
KEPT_CONTEXT = (
    "locale", "timezone", "userAgent", "campaign", "referrer", "page", "app", "device", "os",
    "screen", "library", "channel",
)  # fmt: skip
PAGE_EVENT = "page_viewed"
SCREEN_EVENT = "screen_viewed"


def context_kept(context: Any) -> dict | None:
    if not isinstance(context, dict):
        raise ValueError(f"context: must be an object, got {type(context).__name__}")
    kept = {k: context[k] for k in KEPT_CONTEXT if context.get(k) is not None}
    if not kept:
        return None
    _json_problem(kept, "context")
    return kept


def object_or_empty(value: Any, field: str) -> dict:
    """A traits or properties object; an explicit null (which SDKs send) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field}: must be an object, got {type(value).__name__}")
    _json_problem(value, field)
    return value
