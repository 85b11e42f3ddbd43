import hashlib

from django.db import models
from django.db.models.functions import Upper

from apps.core.jsonsafe import DeepJSONDecoder, DeepJSONEncoder

from .validation import validate_email, validate_phone, validate_timezone, validate_traits

# Traits that also live in their own columns (identify fills both).
CONTACT_FIELDS = ("email", "phone", "timezone", "locale")


class Customer(models.Model):
    external_id = models.CharField(max_length=200, help_text="The business's own user id.")
    email = models.CharField(max_length=254, blank=True, validators=[validate_email])
    phone = models.CharField(
        max_length=16, blank=True, validators=[validate_phone], help_text="E.164"
    )
    timezone = models.CharField(
        max_length=64, blank=True, validators=[validate_timezone], help_text="IANA zone"
    )
    locale = models.CharField(max_length=35, blank=True)
    # DeepJSON*: traits stored nested hundreds of levels deep by older versions
    # still load and save wherever that happens (see apps/core/jsonsafe.py).
    traits = models.JSONField(
        default=dict,
        blank=True,
        encoder=DeepJSONEncoder,
        decoder=DeepJSONDecoder,
        validators=[validate_traits],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # When the customer last changed in a way a segment condition can see (created,
    # traits, new events), as a stamp that only grows: the writing transaction's id
    # (see services.touch_watermark). A segment refresh re-evaluates only the
    # customers stamped since its previous one. The database stamps inserts and
    # trait changes itself (triggers, whoever writes); `ingest` stamps the
    # customers it stores events for.
    touched_seq = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        # Unique constraints rather than unique=True: Django adds a second,
        # LIKE-only index to unique varchar columns, which nothing here uses
        # and every insert would pay for.
        constraints = [models.UniqueConstraint(fields=["external_id"], name="customer_external_id")]
        indexes = [
            models.Index(Upper("email"), name="customer_email_upper"),
            models.Index(fields=["phone"], name="customer_phone"),
            models.Index(fields=["touched_seq"], name="customer_touched"),
        ]

    def __str__(self) -> str:
        return self.external_id


class Event(models.Model):
    # Indexed by event_customer_name_at, which leads with the customer.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    name = models.CharField(max_length=200)
    properties = models.JSONField(
        default=dict, blank=True, encoder=DeepJSONEncoder, decoder=DeepJSONDecoder
    )
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    # The sender's deduplication key; NULLs never collide, so events without one
    # are all kept.
    message_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message_id"], name="event_message_id")]
        indexes = [
            models.Index(fields=["customer", "name", "occurred_at"], name="event_customer_name_at"),
            models.Index(fields=["name", "occurred_at"], name="event_name_at"),
        ]

    def __str__(self) -> str:
        return f"{self.name} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class EventStat(models.Model):
    """Per customer and event name: how many and when first/last. Written in the
    same transaction as the events themselves, so it is always exact."""

    # Indexed by the unique (customer, name) constraint.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="event_stats", db_index=False
    )
    name = models.CharField(max_length=200)
    count = models.PositiveBigIntegerField()
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "name"], name="eventstat_customer_name")
        ]
        indexes = [
            # Covering (PostgreSQL): a segment's event conditions read the
            # customer ids of one event's stats (all of them, or those after a
            # cut), which then come from the index alone, not the whole heap.
            # Alone only where the visibility map says a page is all-visible:
            # an updated stat clears its page's bit until (auto)vacuum sets it
            # again, and the planner goes back to reading the heap (a bitmap
            # scan) when too few are. Updates are scattered: at 1,000,000
            # customers, updating the stats of 5% of them left 152 of 49,986
            # pages all-visible.
            models.Index(
                fields=["name", "last_at"], include=["customer"], name="eventstat_name_last"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} x{self.count}"


class ApiKey(models.Model):
    """A credential for the ingestion API. Only a SHA-256 of the key is stored:
    keys are 256 random bits, so a slow hash would add latency and no safety."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=12, help_text="The key's first characters, to tell keys apart."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()
