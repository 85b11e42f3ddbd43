"""Templates, the messages made from them, and the rules a send must pass:
the suppression list and the consent ledger.

`journeys → messaging`: a message knows the journey, node and enrollment it
came from only as plain values (slug, node id, enrollment id), never as
foreign keys, so messaging does not depend on the app above it.
"""

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import models
from django.db.models import Q

from apps.customers.models import Customer


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"


class Category(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    TRANSACTIONAL = "transactional", "Transactional"


class Template(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=5, choices=Channel.choices)
    category = models.CharField(max_length=13, choices=Category.choices, default=Category.MARKETING)
    topic = models.SlugField(
        max_length=50, blank=True, help_text="Email topic a customer can opt out of (preferences)."
    )
    # Email
    subject = models.CharField(max_length=500, blank=True)
    preheader = models.CharField(max_length=300, blank=True)
    html = models.TextField(blank=True)
    text = models.TextField(
        blank=True, help_text="Plain-text part; derived from the HTML if blank."
    )
    from_email = models.CharField(
        max_length=254, blank=True, help_text="DEFAULT_FROM_EMAIL if blank."
    )
    reply_to = models.CharField(max_length=254, blank=True)
    # SMS
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse a template that would not render or, for marketing email,
        lacks the postal address or the unsubscribe link (the admin form and
        `full_clean` call this; the send path checks again at render time)."""
        from .rendering import template_problems  # rendering imports this module

        problems: dict[str, list[str]] = {}
        for field, problem in template_problems(self):
            problems.setdefault(field or NON_FIELD_ERRORS, []).append(problem)
        if problems:
            raise ValidationError(problems)


class Message(models.Model):
    """One message to one customer, written before any provider is called.

    The idempotency key (journey enrollment, node and visit; or a test send's
    own key) is unique, so asking twice for the same send finds the first row.
    The row is also the record of the decision: a message refused by a policy
    is kept as `suppressed` with its reason, a deferred one as `deferred` with
    the time it may go (`send_after`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DEFERRED = "deferred", "Deferred"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        OPENED = "opened", "Opened"
        CLICKED = "clicked", "Clicked"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"
        FAILED = "failed", "Failed"
        SUPPRESSED = "suppressed", "Suppressed"
        UNKNOWN = "unknown", "Unknown (needs review)"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    channel = models.CharField(max_length=5, choices=Channel.choices)
    category = models.CharField(max_length=13, choices=Category.choices)
    topic = models.CharField(max_length=50, blank=True)
    template = models.ForeignKey(
        Template, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # Where it came from (plain values: messaging does not depend on journeys).
    journey = models.CharField(max_length=100, blank=True)
    node_id = models.CharField(max_length=100, blank=True)
    enrollment_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200)
    is_test = models.BooleanField(default=False)
    # What was (or will be) sent: a snapshot, so later template edits never
    # change the record of what a customer received.
    to_address = models.CharField(max_length=254)
    from_address = models.CharField(max_length=254, blank=True)
    reply_to = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    html = models.TextField(blank=True)
    text = models.TextField(blank=True)  # the email text part, or the SMS body
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(
        max_length=300, blank=True, help_text="Why it was suppressed or deferred, in words."
    )
    error = models.TextField(blank=True)
    provider = models.CharField(max_length=20, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Not before this time: quiet hours (deferred) or a retry's backoff (queued).
    send_after = models.DateTimeField(null=True, blank=True)
    # Set when a delivery task is published for it; NULL = never published
    # (the sweeper publishes those).
    published_at = models.DateTimeField(null=True, blank=True)
    # While `sending`: the claim expires at this time (then: `unknown`).
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="message_idempotency_key")
        ]
        indexes = [
            # Frequency caps and the customer's message history.
            models.Index(fields=["customer", "channel", "created_at"], name="message_customer_at"),
            # The sweeper: what is waiting to go, and leases to expire.
            models.Index(
                fields=["status", "send_after"],
                condition=Q(status__in=["queued", "deferred", "sending"]),
                name="message_pending",
            ),
            models.Index(
                fields=["provider_message_id"],
                condition=~Q(provider_message_id=""),
                name="message_provider_id",
            ),
            models.Index(fields=["journey", "node_id"], name="message_journey_node"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} #{self.pk} to {self.to_address} ({self.status})"


class Suppression(models.Model):
    """An address we must not send to. Lifting one keeps the row (lifted_at),
    so the history of why an address was blocked is never lost."""

    class Reason(models.TextChoices):
        BOUNCE = "bounce", "Bounced"
        COMPLAINT = "complaint", "Spam complaint"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
        MANUAL = "manual", "Added by hand"
        INVALID = "invalid", "Invalid address"
        SMS_OPT_OUT = "sms_opt_out", "Replied STOP"

    channel = models.CharField(max_length=5, choices=Channel.choices)
    # Email addresses lower-cased, phone numbers E.164.
    address = models.CharField(max_length=254)
    reason = models.CharField(max_length=12, choices=Reason.choices)
    source = models.CharField(max_length=100, blank=True, help_text="What suppressed it.")
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "address"],
                condition=Q(lifted_at__isnull=True),
                name="suppression_one_active",
            )
        ]
        indexes = [models.Index(fields=["address"], name="suppression_address")]

    def __str__(self) -> str:
        return f"{self.address} ({self.get_reason_display()})"


class ConsentRecord(models.Model):
    """The consent ledger: append-only. A customer's consent for a channel (and
    an email topic) is the latest record for it; there is no other state."""

    class Status(models.TextChoices):
        GRANTED = "granted", "Granted"
        REVOKED = "revoked", "Revoked"

    class Source(models.TextChoices):
        API = "api", "API"
        IDENTIFY = "identify", "Identify trait"
        IMPORT = "import", "Import"
        PREFERENCES = "preferences", "Preference centre"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe link"
        SMS_KEYWORD = "sms_keyword", "SMS keyword"
        PROVIDER = "provider", "Provider report"
        ADMIN = "admin", "Admin"
        DEMO = "demo", "Demo data"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="consents", db_index=False
    )
    channel = models.CharField(max_length=5, choices=Channel.choices)
    topic = models.CharField(max_length=50, blank=True, help_text="Blank: the whole channel.")
    status = models.CharField(max_length=7, choices=Status.choices)
    source = models.CharField(max_length=12, choices=Source.choices)
    wording = models.TextField(blank=True, help_text="What the customer was shown.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    recorded_at = models.DateTimeField(help_text="When the customer gave or withdrew consent.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["customer", "channel", "topic", "recorded_at"], name="consent_latest"
            )
        ]

    def __str__(self) -> str:
        scope = f"{self.channel}/{self.topic}" if self.topic else self.channel
        return f"{scope} {self.status} ({self.source})"
