"""The one shape every provider's webhook is normalised into (the lesson of
django-anymail): the provider modules turn their payloads into
`IncomingEvent`s to store and, when processing, into an `Outcome` that says
what the event means for the message, the customer and the address.
"""

from dataclasses import dataclass, field
from datetime import datetime

from apps.messaging.models import Suppression

from .models import Engagement

# Customer events recorded for human engagement (the condition language,
# `wait_for_event` and goals use these names).
EMAIL_EVENTS = {
    Engagement.Kind.DELIVERED: "email_delivered",
    Engagement.Kind.OPEN: "email_opened",
    Engagement.Kind.CLICK: "email_clicked",
    Engagement.Kind.BOUNCE: "email_bounced",
    Engagement.Kind.DROPPED: "email_bounced",
    Engagement.Kind.COMPLAINT: "email_complained",
    Engagement.Kind.UNSUBSCRIBE: "unsubscribed",
    Engagement.Kind.RESUBSCRIBE: "email_resubscribed",
}
SMS_EVENTS = {
    Engagement.Kind.DELIVERED: "sms_delivered",
    Engagement.Kind.FAILED: "sms_failed",
}
SMS_OPTED_OUT = "sms_opted_out"
SMS_OPTED_IN = "sms_opted_in"
SMS_REPLIED = "sms_replied"


@dataclass(frozen=True)
class IncomingEvent:
    """A provider event as received, ready to store as a `ProviderEvent`. An
    item that could not be read carries its `error`: it is stored (nothing is
    dropped) and never processed."""

    provider: str
    event_id: str
    kind: str
    occurred_at: datetime
    payload: dict = field(default_factory=dict)
    address: str = ""
    provider_message_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class Outcome:
    """What one provider event means.

    `engagement`: the Engagement kind to record (None: record none, e.g.
    "processed" or Twilio's "queued"); `status`: where the message moves
    (forward only; None: nowhere); `suppress`: the reason the event's address
    goes on the suppression list."""

    engagement: str | None = None
    status: str | None = None
    machine_reason: str = ""
    url: str = ""
    user_agent: str = ""
    detail: str = ""
    suppress: str | None = None
    lift_unsubscribe: bool = False

    @property
    def revokes_consent(self) -> bool:
        return self.suppress == Suppression.Reason.UNSUBSCRIBE
