"""What comes back after a message is sent: the links of each email as written
(the click redirect goes only to them), every open, click, delivery report,
bounce and complaint as an `Engagement`, the providers' raw webhook events
(kept even when they match no message of ours) and inbound SMS.

`messaging ← tracking`: tracking points at messages; messaging never imports
tracking.
"""

from django.db import models
from django.db.models import Q

from apps.customers.models import Customer
from apps.messaging.models import Message


class TrackedLink(models.Model):
    """A link of an email as it was rendered, stored with the message so that a
    click token (message id + position) can only ever lead to this URL."""

    # Indexed by the unique (message, position) constraint.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="tracked_links", db_index=False
    )
    position = models.PositiveSmallIntegerField()
    url = models.TextField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "position"], name="trackedlink_position")
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.url}"


class ProviderEvent(models.Model):
    """One event a provider reported (a SendGrid event, a Twilio status
    callback), stored as received before anything acts on it. Unique per
    provider event id, so a retried webhook stores nothing twice. `message` is
    NULL when the event matched no message of ours: it is kept, not dropped."""

    class Provider(models.TextChoices):
        SENDGRID = "sendgrid", "SendGrid"
        TWILIO = "twilio", "Twilio"

    provider = models.CharField(max_length=8, choices=Provider.choices)
    # sg_event_id; for Twilio "<MessageSid>:<MessageStatus>".
    event_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=40, help_text="The event type as the provider named it.")
    message = models.ForeignKey(
        Message,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="provider_events",
        db_index=False,
    )
    provider_message_id = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=254, blank=True, help_text="Email or phone number.")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    payload = models.JSONField(default=dict)
    # NULL until processed (the queue of `services.processing.tracking_process`).
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="Why it could not be processed, if so.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="providerevent_event_id")
        ]
        indexes = [
            models.Index(
                fields=["id"], condition=Q(processed_at__isnull=True), name="providerevent_pending"
            ),
            models.Index(
                fields=["message"], condition=Q(message__isnull=False), name="providerevent_message"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.kind} {self.event_id}"


class Engagement(models.Model):
    """An open, a click or a delivery report of one message, from our own open
    pixel and click redirect or from a provider.

    Suspected machine engagement (HEAD requests, known scanner agents, clicks
    within seconds of delivery, opens the provider flags as machine opens) is
    kept with `machine` set and its reason: it never moves the message nor
    records a customer event, so journeys and goals never react to it, and
    analytics count it apart.

    Rows from the pixel and the redirect are written in one statement when the
    request comes in and processed in bulk later (`processed_at` NULL until
    then); rows from provider events are written processed."""

    class Kind(models.TextChoices):
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        OPEN = "open", "Opened"
        CLICK = "click", "Clicked"
        DEFERRED = "deferred", "Deferred"
        BOUNCE = "bounce", "Bounced"
        DROPPED = "dropped", "Dropped"
        FAILED = "failed", "Failed"
        COMPLAINT = "complaint", "Spam complaint"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
        RESUBSCRIBE = "resubscribe", "Resubscribed"

    class Source(models.TextChoices):
        PIXEL = "pixel", "Open pixel"
        REDIRECT = "redirect", "Click redirect"
        SENDGRID = "sendgrid", "SendGrid"
        TWILIO = "twilio", "Twilio"

    # Indexed by engagement_message_kind, which leads with the message.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="engagements", db_index=False
    )
    kind = models.CharField(max_length=11, choices=Kind.choices)
    source = models.CharField(max_length=8, choices=Source.choices)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField()
    machine = models.BooleanField(default=False)
    machine_reason = models.CharField(max_length=200, blank=True)
    link = models.ForeignKey(
        TrackedLink, on_delete=models.SET_NULL, null=True, blank=True, db_index=False
    )
    url = models.TextField(blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    provider_event = models.ForeignKey(
        ProviderEvent, on_delete=models.SET_NULL, null=True, blank=True, db_index=False
    )
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["message", "kind"], name="engagement_message_kind"),
            models.Index(fields=["kind", "occurred_at"], name="engagement_kind_at"),
            models.Index(
                fields=["id"], condition=Q(processed_at__isnull=True), name="engagement_pending"
            ),
        ]

    def __str__(self) -> str:
        flag = " (machine)" if self.machine else ""
        return f"{self.kind}{flag} of message #{self.message_id}"


class InboundSms(models.Model):
    """A text a customer sent us. Keywords act at once (STOP-type opt out,
    START/YES/UNSTOP opt back in, HELP answers); a reply a listener takes
    (an NPS score) is marked with it; anything else is kept as free text for
    the admin, flagged for review when it reads like a request to stop."""

    class Kind(models.TextChoices):
        OPT_OUT = "opt_out", "Opt-out keyword"
        OPT_IN = "opt_in", "Opt-in keyword"
        HELP = "help", "HELP keyword"
        REPLY = "reply", "Reply taken by a listener"
        TEXT = "text", "Free text"

    message_sid = models.CharField(max_length=64, unique=True)
    from_number = models.CharField(max_length=32)
    to_number = models.CharField(max_length=32, blank=True)
    body = models.TextField(blank=True)
    # The (first) customer with this phone number, if any.
    customer = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="inbound_sms"
    )
    kind = models.CharField(max_length=7, choices=Kind.choices)
    handled_by = models.CharField(
        max_length=200, blank=True, help_text="The listener that took it."
    )
    reply = models.TextField(blank=True, help_text="What we answered (TwiML message), if anything.")
    needs_review = models.BooleanField(
        default=False, help_text="Free text that reads like a request to stop."
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.CharField(max_length=150, blank=True)
    received_at = models.DateTimeField()
    payload = models.JSONField(default=dict, help_text="Every parameter Twilio posted.")

    class Meta:
        verbose_name = "inbound SMS"
        verbose_name_plural = "inbound SMS"
        indexes = [
            models.Index(fields=["from_number", "received_at"], name="inboundsms_from_at"),
            models.Index(
                fields=["received_at"],
                condition=Q(needs_review=True, reviewed_at__isnull=True),
                name="inboundsms_review",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_number}: {self.body[:40]}"
