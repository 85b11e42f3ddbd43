"""The consent API: `POST /api/v1/consent` appends to a customer's consent
ledger (same key, errors and body handling as the ingestion API)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router
from ninja.errors import HttpError
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from apps.customers.api import ERRORS, ApiKeyAuth, body_doc, read_json_object
from apps.customers.schemas import (
    IdentifyIn,
    StoredText,
    Timestamp,
    UserId,
    describe_errors,
)
from apps.customers.selectors import customer_by_user_id
from apps.customers.services import ingest

from .consent import consent_record
from .models import ConsentRecord
from .selectors import consent_state

router = Router(auth=ApiKeyAuth(), tags=["consent"])

# A client's clock may run a little ahead of ours; further ahead is a mistake.
CLOCK_SKEW = timedelta(minutes=5)

Source = Literal[tuple(ConsentRecord.Source.values)]  # type: ignore[valid-type]


# A slug as Django's slugify leaves it (consent_record's rule): lower-case
# letters, digits, _ and -, no "--", starting and ending with a letter or digit.
TOPIC_PATTERN = r"^(?:[a-z0-9](?:(?:[a-z0-9_]|-[a-z0-9_])*(?:[a-z0-9]|-[a-z0-9]))?)?$"


def _text_only(value):
    """An address is text: pydantic would read `false` or `0` as 0.0.0.0."""
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an IPv4 or IPv6 address as text")
    return value


class ConsentIn(BaseModel):
    """A customer gave or withdrew consent for a channel (or an email topic).
    Appended to the ledger as it is: when (`timestamp`, default now), where
    (`source`), what they were shown (`wording`), and from which device."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        # `_topics_are_for_email`, in the document: an SMS consent names no topic.
        json_schema_extra={
            "if": {"properties": {"channel": {"const": "sms"}}, "required": ["channel"]},
            "then": {"properties": {"topic": {"maxLength": 0}}},
        },
    )

    user_id: Annotated[UserId, StoredText] = Field(alias="userId")
    channel: Literal["email", "sms"]
    status: Literal["granted", "revoked"]
    topic: Annotated[str, StringConstraints(pattern=TOPIC_PATTERN, max_length=50)] = Field(
        default="", description="An email topic (a slug); blank for the whole channel."
    )
    source: Source = Field(default="api", description="Where the consent was given.")
    wording: Annotated[str, StringConstraints(max_length=5000), StoredText] = Field(
        default="", description="What the customer was shown when they said yes or no."
    )
    timestamp: Timestamp = Field(default=None, description="When; now if absent.")
    # pydantic documents IPvAnyAddress with a format of its own, which no
    # client generator knows: the standard formats it accepts instead.
    ip: Annotated[
        IPvAnyAddress | None,
        BeforeValidator(_text_only),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "format": "ipv4"},
                    {"type": "string", "format": "ipv6"},
                    {"type": "null"},
                ],
                "description": "The device's address when consent was given (IPv4 or IPv6).",
            }
        ),
    ] = None
    user_agent: Annotated[str, StringConstraints(max_length=500), StoredText] = Field(
        default="", alias="userAgent"
    )

    @model_validator(mode="after")
    def _topics_are_for_email(self) -> "ConsentIn":
        if self.topic and self.channel != "email":
            raise ValueError("topic: topics are for email only")
        return self


class ConsentOut(BaseModel):
    success: bool = True
    id: int
    recorded_at: datetime = Field(alias="recordedAt")
    # The customer's consent for this channel (and topic) after the record:
    # a topic grant stays false while the whole channel is revoked.
    consent: bool | None

    model_config = ConfigDict(populate_by_name=True)


@router.post(
    "/consent",
    response={200: ConsentOut, **ERRORS},
    openapi_extra=body_doc("ConsentIn", ok="Recorded; `consent` is the state it leaves."),
    by_alias=True,
)
def consent(request: HttpRequest):
    """Record that a customer granted or revoked consent for a channel (email
    or sms) or an email topic. SMS is sent only to customers who granted it;
    marketing email to all who did not revoke it. Creates the customer if the
    `userId` is new."""
    try:
        body = ConsentIn.model_validate(read_json_object(request))
    except ValidationError as exc:
        raise HttpError(400, describe_errors(exc)) from None
    now = timezone.now()
    recorded_at = body.timestamp or now
    if recorded_at > now + CLOCK_SKEW:
        raise HttpError(400, "timestamp: is in the future")
    customer = customer_by_user_id(body.user_id)
    if customer is None:
        ingest([IdentifyIn(userId=body.user_id)], received_at=now)
        customer = customer_by_user_id(body.user_id)
    try:
        record = consent_record(
            customer=customer,
            channel=body.channel,
            status=body.status,
            source=body.source,
            recorded_at=recorded_at,
            topic=body.topic,
            wording=body.wording,
            ip_address=str(body.ip) if body.ip else None,
            user_agent=body.user_agent,
        )
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return ConsentOut(
        id=record.pk,
        recordedAt=record.recorded_at.astimezone(UTC),
        consent=consent_state(customer, body.channel, body.topic),
    )
