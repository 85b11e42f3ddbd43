"""The Segment-spec shaped calls Tenure accepts, as typed models. The HTTP API,
`import_events` and `seed_demo` all speak them."""

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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
        problem = _window_problem(value, "")
        if problem:
            raise ValueError(problem.removeprefix(": "))
        return value.astimezone(UTC)
    return value


def _window_problem(value: datetime, field: str) -> str | None:
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


def _nullable(title: str, description: str) -> dict:
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


# What is kept of an SDK's `context` on the event: what marketing uses (the
# visitor's language and zone, the device and app, the page and campaign it
# came from). The IP address and anything derived from it are not kept.
KEPT_CONTEXT = (
    "locale", "timezone", "userAgent", "campaign", "referrer", "page", "app", "device", "os",
    "screen", "library", "channel",
)  # fmt: skip
PAGE_EVENT = "page_viewed"
SCREEN_EVENT = "screen_viewed"


def _context_kept(context: Any) -> dict | None:
    if not isinstance(context, dict):
        raise ValueError(f"context: must be an object, got {type(context).__name__}")
    kept = {k: context[k] for k in KEPT_CONTEXT if context.get(k) is not None}
    if not kept:
        return None
    _json_problem(kept, "context")
    return kept


def _object(value: Any, field: str) -> dict:
    """A traits or properties object; an explicit null (which SDKs send) is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field}: must be an object, got {type(value).__name__}")
    _json_problem(value, field)
    return value


class _Call(BaseModel):
    """What every call has: who (the business's `userId`, or the SDK's
    `anonymousId` for a visitor not identified yet; either may be both),
    when, and a deduplication key. Fields the SDKs add that Tenure has no
    use for (`integrations`, `_metadata`, `writeKey`, …) are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        # The document says what the validator does: one of the ids at least.
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("userId", "anonymousId")
            ]
        },
    )

    user_id: Annotated[
        UserId | None,
        WithJsonSchema(
            _nullable(
                "userId",
                "The business's own user id (a number is stored "
                "as its text). A call needs userId, anonymousId or both.",
            )
        ),
    ] = Field(default=None, alias="userId")
    anonymous_id: Annotated[
        AnonymousId | None,
        WithJsonSchema(
            _nullable(
                "anonymousId",
                "The SDK's id of a visitor not identified "
                "yet. With both ids, the visitor's profile merges into the "
                "customer's.",
            )
        ),
    ] = Field(default=None, alias="anonymousId")
    timestamp: ClientTime = None
    original_timestamp: ClientTime = Field(default=None, alias="originalTimestamp")
    sent_at: ClientTime = Field(default=None, alias="sentAt")
    message_id: MessageId | None = Field(default=None, alias="messageId")
    context: Annotated[
        Any,
        WithJsonSchema(
            {
                "type": ["object", "null"],
                "description": "The SDK's context. Kept on the event: "
                + ", ".join(KEPT_CONTEXT)
                + " (never the IP address). `timezone` and `locale` fill a customer's "
                "empty columns.",
            }
        ),
    ] = None

    def _check_call(self) -> None:
        """The checks every call makes, from its type's one model validator
        (each validator is a call from pydantic's Rust into Python)."""
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("userId: one of userId and anonymousId is required")
        _text_problem(self.user_id, "userId")
        _text_problem(self.anonymous_id, "anonymousId")
        _text_problem(self.message_id, "messageId")
        self.timestamp = _occurred_at(self.timestamp, self.original_timestamp, self.sent_at)
        self.original_timestamp = self.sent_at = None
        if self.context is not None:
            self.context = _context_kept(self.context)


def _occurred_at(
    timestamp: datetime | None, original: datetime | None, sent_at: datetime | None
) -> datetime | None:
    """When the call happened, in UTC. With `sentAt`, the client's clock is
    corrected as Segment does: the time is shifted by how far our receipt is
    from `sentAt` (a phone whose clock runs an hour fast sends times an hour
    ahead, and a `sentAt` an hour ahead too)."""
    when = timestamp or original
    if when is None:
        return None
    field = "timestamp" if timestamp is not None else "originalTimestamp"
    if sent_at is not None:
        try:
            when = when + (datetime.now(UTC) - sent_at)
        except OverflowError:
            raise ValueError(f"{field}: cannot be corrected by sentAt (out of range)") from None
    problem = _window_problem(when, field)
    if problem:
        raise ValueError(problem)
    return when.astimezone(UTC)


class IdentifyIn(_Call):
    """Upserts a customer; traits merge into the stored ones. The `email`,
    `phone`, `timezone` and `locale` traits also fill the customer's columns.
    With both ids, the anonymous visitor's profile merges into the customer.
    Without `traits`, those in `context.traits` are taken: RudderStack's SDKs
    send an identify's traits there only."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] | None = Field(default_factory=dict)

    @model_validator(mode="after")
    def _can_be_stored(self):
        """Text and traits PostgreSQL can store, and contact traits that fit
        their columns: one validator for the whole call."""
        if not self.traits and type(self.context) is dict:
            from_context = self.context.get("traits")
            if type(from_context) is dict:
                self.traits = from_context  # checked below like `traits`
        self._check_call()
        self.traits = traits = _object(self.traits, "traits")
        for field in CONTACT_FIELDS:
            value = traits.get(field)
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


EventName = Annotated[
    # pattern: a name of white space alone is refused (stripped, it is empty).
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")
]
ShortText = Annotated[str, StringConstraints(max_length=200)]


class TrackIn(_Call):
    """Appends an event to a customer's history (creating the customer if new)."""

    type: Literal["track"] = "track"
    event: EventName
    properties: dict[str, Any] | None = Field(default_factory=dict)

    @model_validator(mode="after")
    def _can_be_stored(self):
        self._check_call()
        _text_problem(self.event, "event")
        self.properties = _object(self.properties, "properties")
        return self


class _ViewIn(TrackIn):
    """A page or screen view, stored as an event (`page_viewed`,
    `screen_viewed`) whose properties hold the view's `name`, `category` and
    (pages) URL `path`, beside the properties sent: usable in conditions and
    triggers like any event."""

    name: ShortText | None = None
    category: ShortText | None = None

    @model_validator(mode="after")
    def _can_be_stored(self):
        self._check_call()
        self.event = PAGE_EVENT if self.type == "page" else SCREEN_EVENT
        _text_problem(self.name, "name")
        _text_problem(self.category, "category")
        properties = {**_object(self.properties, "properties")}
        for key in ("name", "category"):
            if getattr(self, key) is not None:
                properties[key] = getattr(self, key)
        if self.type == "page" and "path" not in properties:
            path = _page_path(properties.get("url"), self.context)
            if path:
                properties["path"] = path
        self.properties = properties
        return self


def _page_path(url: Any, context: dict | None) -> str | None:
    page = (context or {}).get("page")
    if isinstance(page, dict) and isinstance(page.get("path"), str):
        return page["path"]
    if isinstance(url, str):
        return urlsplit(url).path or "/"
    return None


class PageIn(_ViewIn):
    """A web page view: the event `page_viewed`."""

    type: Literal["page"] = "page"
    event: EventName = PAGE_EVENT


class ScreenIn(_ViewIn):
    """A mobile screen view: the event `screen_viewed`."""

    type: Literal["screen"] = "screen"
    event: EventName = SCREEN_EVENT


class GroupIn(_Call):
    """Puts the customer in an account (a company): the account is created or
    its traits merged, and the customer becomes one of its members (a
    customer may belong to several). `traits.name` names the account."""

    type: Literal["group"] = "group"
    group_id: UserId = Field(alias="groupId")
    traits: dict[str, Any] | None = Field(default_factory=dict)

    @model_validator(mode="after")
    def _can_be_stored(self):
        self._check_call()
        _text_problem(self.group_id, "groupId")
        self.traits = _object(self.traits, "traits")
        name = self.traits.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError("traits.name: must be a string")
        return self


class AliasIn(_Call):
    """Says that `previousId` (an anonymous id or an earlier user id) is the
    same person as `userId`: the previous profile merges into the customer."""

    type: Literal["alias"] = "alias"
    user_id: UserId = Field(alias="userId")
    previous_id: UserId = Field(
        alias="previousId",
        description="The id the person had before (an anonymousId or an earlier userId); "
        "must differ from userId.",
    )

    @model_validator(mode="after")
    def _can_be_stored(self):
        self._check_call()
        _text_problem(self.previous_id, "previousId")
        if self.previous_id == self.user_id:
            raise ValueError("previousId: must differ from userId (an alias to itself)")
        return self


Call = IdentifyIn | TrackIn | PageIn | ScreenIn | GroupIn | AliasIn
CALL_TYPES: dict[str, type[_Call]] = {
    "identify": IdentifyIn,
    "track": TrackIn,
    "page": PageIn,
    "screen": ScreenIn,
    "group": GroupIn,
    "alias": AliasIn,
}
TypedCall = Annotated[Call, Field(discriminator="type")]
# Parses and validates a JSON document in one pass (pydantic-core, in Rust):
# the fast path for good input. Refusals are explained by `parse_call`.
TYPED_CALL = TypeAdapter(TypedCall)


class BatchIn(BaseModel):
    """Up to SEGMENT_MAX_BATCH_ITEMS calls (identify, track, page, screen,
    group, alias), each with its `type`.

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
                    "description": "A call with its `type`: identify, track, page, screen, "
                    "group or alias (the IdentifyIn, TrackIn, PageIn, ScreenIn, GroupIn and "
                    "AliasIn schemas). An item that is not one is refused alone: "
                    "listed in the answer's `errors`, the other items stored."
                },
            }
        ),
    ]
    sent_at: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "When the client sent the batch (ISO-8601): the `sentAt` of "
                "every item without its own, which corrects the client's clock. Checked "
                "with each item: a bad one is that item's error.",
            }
        ),
    ] = Field(default=None, alias="sentAt")
    context: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "A context object for every item, under each item's own "
                "(the item's keys win). Checked with each item: one that is not an object "
                "is the error of each item without a context of its own.",
            }
        ),
    ] = None
    write_key: Annotated[
        Any,
        WithJsonSchema(
            {
                "description": "The API key, when no Authorization header carries it "
                "(analytics.js sends it here); ignored when one does.",
            }
        ),
    ] = Field(default=None, alias="writeKey")


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

    error: str = Field(description="What is wrong, naming each offending field.")
    code: str = Field(
        description="The kind of refusal: invalid_request (400), unauthorized (401), "
        "too_large (413)."
    )
    message: str = Field(description="The same as `error` (what RudderStack's SDKs read).")


def parse_call(item: Any) -> Call:
    """An item of a batch or an import line: a dict with a known `type`."""
    if not isinstance(item, dict):
        raise ValueError(f"must be an object, got {type(item).__name__}")
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in CALL_TYPES:  # a dict or list: unhashable
        # Named by its type unless it is short text: its repr could be megabytes
        # long, or nested past what repr can walk.
        got = repr(kind) if isinstance(kind, str) and len(kind) <= 50 else type(kind).__name__
        raise ValueError(f"type: must be one of {', '.join(CALL_TYPES)}, got {got}")
    try:
        return CALL_TYPES[kind].model_validate(item)
    except ValidationError as exc:
        raise ValueError(describe_errors(exc)) from None
