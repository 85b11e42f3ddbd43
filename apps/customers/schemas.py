"""The Segment-spec shaped calls Tenure accepts, as typed models. The HTTP API,
`import_events` and `seed_demo` all speak them."""

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import setting_changed
from django.dispatch import receiver
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from apps.core import jsonsafe
from apps.core.fixtures import describe_errors

from .models import CONTACT_FIELDS, Customer
from .validation import validate_email, validate_phone, validate_timezone


def _id_to_str(value: Any) -> Any:
    # Segment allows numeric user ids; they are stored as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _parse_timestamp(value: Any) -> Any:
    """An ISO-8601 text (UTC when it names no offset) within the ingestion
    window (`INGEST_TIMESTAMP_MIN` to `INGEST_TIMESTAMP_MAX_FUTURE_S` ahead
    of now), in UTC. Python reads offsets up to ±23:59 and PostgreSQL only up
    to ±15:59; once in UTC any offset Python reads is stored as the moment it
    names. The window is a rule of input, like a length, so the clock is read
    here; a datetime is what our own code passes (its `now`, which may be a
    simulated one) and is taken as it is."""
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
    # Compared before any conversion: year 9999 at -14:00 is past what a
    # Python datetime can hold in UTC, but comparing it is exact.
    earliest, ahead = _window()
    if value < earliest:
        raise ValueError(f"is before {earliest.isoformat()}, the earliest time accepted")
    latest = datetime.now(UTC) + ahead
    if value > latest:
        raise ValueError(
            f"is more than {ahead.total_seconds():.0f} s ahead of now "
            f"({latest.isoformat(timespec='seconds')} at the latest)"
        )
    return value.astimezone(UTC)


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
Timestamp = Annotated[
    datetime | None,
    BeforeValidator(_parse_timestamp),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            "description": "ISO-8601 (UTC when no offset is given), from 1970-01-01 "
            "(INGEST_TIMESTAMP_MIN) to one day ahead of now (INGEST_TIMESTAMP_MAX_FUTURE_S).",
        }
    ),
]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200)]

_CONTACT_VALIDATORS = {
    "email": validate_email,
    "phone": validate_phone,
    "timezone": validate_timezone,
    "locale": lambda value: None,
}
# The columns' sizes: a longer value cannot be stored (PostgreSQL refuses it).
_CONTACT_MAX_LENGTH = {f: Customer._meta.get_field(f).max_length for f in CONTACT_FIELDS}


def _text_problem(value: str | None, field: str) -> None:
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


class _Call(BaseModel):
    # Segment clients send more (context, integrations, anonymousId…): ignored.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    user_id: UserId = Field(alias="userId")
    timestamp: Timestamp = None
    message_id: MessageId | None = Field(default=None, alias="messageId")


class IdentifyIn(_Call):
    """Upserts a customer; traits merge into the stored ones. The `email`,
    `phone`, `timezone` and `locale` traits also fill the customer's columns."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _can_be_stored(self):
        """Text and traits PostgreSQL can store, and contact traits that fit
        their columns: one validator for the whole call (each costs a call
        from pydantic's Rust into Python)."""
        _text_problem(self.user_id, "userId")
        _text_problem(self.message_id, "messageId")
        _json_problem(self.traits, "traits")
        for field in CONTACT_FIELDS:
            value = self.traits.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"traits.{field}: must be a string")
            if len(value) > _CONTACT_MAX_LENGTH[field]:
                raise ValueError(
                    f"traits.{field}: must be at most {_CONTACT_MAX_LENGTH[field]} characters"
                )
            try:
                _CONTACT_VALIDATORS[field](value)
            except DjangoValidationError as exc:
                raise ValueError(f"traits.{field}: {exc.messages[0]}") from None
        return self


class TrackIn(_Call):
    """Appends an event to a customer's history (creating the customer if new)."""

    type: Literal["track"] = "track"
    # pattern: a name of white space alone is refused (stripped, it is empty).
    event: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")
    ]
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _can_be_stored(self):
        _text_problem(self.user_id, "userId")
        _text_problem(self.message_id, "messageId")
        _text_problem(self.event, "event")
        _json_problem(self.properties, "properties")
        return self


Call = IdentifyIn | TrackIn
CALL_TYPES: dict[str, type[_Call]] = {"identify": IdentifyIn, "track": TrackIn}
TypedCall = Annotated[IdentifyIn | TrackIn, Field(discriminator="type")]
# Parses and validates a JSON document in one pass (pydantic-core, in Rust):
# the fast path for good input. Refusals are explained by `parse_call`.
TYPED_CALL = TypeAdapter(TypedCall)


class BatchIn(BaseModel):
    """Up to the body limit of identify/track calls, each with its `type`.

    The document (it validates nothing: the endpoint reads its items one by
    one) lists the items as any value: one that is not a valid call is
    refused alone, in the 200's `errors`, so a schema that refused it would
    say the whole request is refused, which it is not."""

    batch: Annotated[
        list[Any],
        WithJsonSchema(
            {
                "type": "array",
                "items": {
                    "description": "An identify or track call (the IdentifyIn and TrackIn "
                    "schemas, with `type`). An item that is not one is refused alone: "
                    "listed in the answer's `errors`, the other items stored."
                },
            }
        ),
    ]


class BatchError(BaseModel):
    """An item of the batch that was refused, and why."""

    index: int = Field(description="The item's position in `batch`, from 0.")
    error: str = Field(description="Each offending field and what is wrong with it.")


class BatchOut(BaseModel):
    """What a batch stored and what it refused; a refused item never fails the others."""

    accepted: int = Field(description="How many items were valid and stored.")
    errors: list[BatchError] = Field(description="The refused items, by index.")


class Accepted(BaseModel):
    success: bool = True


class ErrorOut(BaseModel):
    """A refusal: what is wrong, naming each offending field."""

    error: str


def parse_call(item: Any) -> Call:
    """An item of a batch or an import line: a dict with a known `type`."""
    if not isinstance(item, dict):
        raise ValueError(f"must be an object, got {type(item).__name__}")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in CALL_TYPES:  # a dict or list: unhashable
        # Named by its type unless it is short text: its repr could be megabytes
        # long, or nested past what repr can walk.
        got = repr(kind) if isinstance(kind, str) and len(kind) <= 50 else type(kind).__name__
        raise ValueError(f"type: must be 'identify' or 'track', got {got}")
    try:
        return CALL_TYPES[kind].model_validate(item)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc)) from None
