"""The Segment-spec calls Tenure accepts, as typed models: identify, track,
page, screen, group and alias."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from apps.core.fixtures import describe_errors

from ..models import CONTACT_FIELDS
from .fields import (
    CONTACT_MAX_LENGTH,
    CONTACT_VALIDATORS,
    KEPT_CONTEXT,
    PAGE_EVENT,
    SCREEN_EVENT,
    AnonymousId,
    ClientTime,
    MessageId,
    UserId,
    context_kept,
    nullable_id_doc,
    object_or_empty,
    text_problem,
    window_problem,
)


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
            nullable_id_doc(
                "userId",
                "The business's own user id (a number is stored "
                "as its text). A call needs userId, anonymousId or both.",
            )
        ),
    ] = Field(default=None, alias="userId")
    anonymous_id: Annotated[
        AnonymousId | None,
        WithJsonSchema(
            nullable_id_doc(
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
        text_problem(self.user_id, "userId")
        text_problem(self.anonymous_id, "anonymousId")
        text_problem(self.message_id, "messageId")
        self.timestamp = _occurred_at(self.timestamp, self.original_timestamp, self.sent_at)
        self.original_timestamp = self.sent_at = None
        if self.context is not None:
            self.context = context_kept(self.context)


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
    problem = window_problem(when, field)
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
        self.traits = traits = object_or_empty(self.traits, "traits")
        for field in CONTACT_FIELDS:
            value = traits.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"traits.{field}: must be a string")
            if len(value) > CONTACT_MAX_LENGTH[field]:
                raise ValueError(
                    f"traits.{field}: must be at most {CONTACT_MAX_LENGTH[field]} characters"
                )
            try:
                CONTACT_VALIDATORS[field](value)
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
        text_problem(self.event, "event")
        self.properties = object_or_empty(self.properties, "properties")
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
        text_problem(self.name, "name")
        text_problem(self.category, "category")
        properties = {**object_or_empty(self.properties, "properties")}
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
        text_problem(self.group_id, "groupId")
        self.traits = object_or_empty(self.traits, "traits")
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
        text_problem(self.previous_id, "previousId")
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
