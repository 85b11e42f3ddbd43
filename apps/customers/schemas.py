"""The Segment-spec shaped calls Tenure accepts, as typed models. The HTTP API,
`import_events` and `seed_demo` all speak them."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from apps.core.fixtures import describe_errors

from .models import CONTACT_FIELDS
from .validation import validate_email, validate_phone, validate_timezone


def _id_to_str(value: Any) -> Any:
    # Segment allows numeric user ids; they are stored as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _parse_timestamp(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string like 2026-01-31T09:30:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    BeforeValidator(_id_to_str),  # runs first: before-validators apply outermost-first
]
Timestamp = Annotated[datetime | None, BeforeValidator(_parse_timestamp)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200)]

_CONTACT_VALIDATORS = {
    "email": validate_email,
    "phone": validate_phone,
    "timezone": validate_timezone,
    "locale": lambda value: None,
}


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
    def _contact_traits_are_valid(self):
        for field in CONTACT_FIELDS:
            value = self.traits.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"traits.{field}: must be a string")
            try:
                _CONTACT_VALIDATORS[field](value)
            except DjangoValidationError as exc:
                raise ValueError(f"traits.{field}: {exc.messages[0]}") from None
        return self


class TrackIn(_Call):
    """Appends an event to a customer's history (creating the customer if new)."""

    type: Literal["track"] = "track"
    event: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    properties: dict[str, Any] = Field(default_factory=dict)


Call = IdentifyIn | TrackIn
CALL_TYPES: dict[str, type[_Call]] = {"identify": IdentifyIn, "track": TrackIn}
TypedCall = Annotated[IdentifyIn | TrackIn, Field(discriminator="type")]
# Parses and validates a JSON document in one pass (pydantic-core, in Rust):
# the fast path for good input. Refusals are explained by `parse_call`.
TYPED_CALL = TypeAdapter(TypedCall)


class BatchIn(BaseModel):
    """Up to the body limit of identify/track calls, each with its `type`."""

    batch: list[TypedCall]


class BatchError(BaseModel):
    index: int
    error: str


class BatchOut(BaseModel):
    accepted: int
    errors: list[BatchError]


class Accepted(BaseModel):
    success: bool = True


class ErrorOut(BaseModel):
    error: str


def parse_call(item: Any) -> Call:
    """An item of a batch or an import line: a dict with a known `type`."""
    if not isinstance(item, dict):
        raise ValueError(f"must be an object, got {type(item).__name__}")
    kind = item.get("type")
    if kind not in CALL_TYPES:
        raise ValueError(f"type: must be 'identify' or 'track', got {kind!r}")
    try:
        return CALL_TYPES[kind].model_validate(item)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc)) from None
