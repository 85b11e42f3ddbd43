import hashlib

from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

from apps.core.jsonsafe import DeepJSONDecoder, DeepJSONEncoder

from .validation import validate_email, validate_phone, validate_timezone, validate_traits

# Traits that also live in their own columns (identify fills both).
CONTACT_FIELDS = ("email", "phone", "timezone", "locale")


# The three kinds of profile, as filters (the admin's Profile filter, the
# time to live of visitors and the partial index it reads agree on them).
KNOWN = Q(external_id__isnull=False, merged_into__isnull=True)
ANONYMOUS = Q(external_id__isnull=True, merged_into__isnull=True)
MERGED = Q(merged_into__isnull=False)


class CustomerQuerySet(models.QuerySet):
    def known(self) -> "CustomerQuerySet":
        """The customers a business knows: identified (a user id) and not
        merged into another. Anonymous visitors and merged profiles receive
        no messages, belong to no segment and are not counted."""
        return self.filter(KNOWN)

    def anonymous(self) -> "CustomerQuerySet":
        """Visitors known only by an SDK's anonymous id, never identified."""
        return self.filter(ANONYMOUS)

    def merged(self) -> "CustomerQuerySet":
        """Profiles merged into another customer (records of its old ids)."""
        return self.filter(MERGED)


# The same rule in SQL, for queries written by hand (`alias` names the table).
def known_sql(alias: str) -> str:
    return f"{alias}.external_id IS NOT NULL AND {alias}.merged_into_id IS NULL"


class Customer(models.Model):
    """A person: known by the business's user id (`external_id`), or, until
    identified, an anonymous visitor known only by the SDK's `anonymous_id`.
    A profile merged into another (an anonymous visitor who signed up while
    already known, an `alias`) stays as a record pointing at it
    (`merged_into`), so its ids keep resolving to the customer it became."""

    external_id = models.CharField(  # noqa: DJ001 - NULL: not identified yet
        max_length=200, null=True, blank=True, help_text="The business's own user id."
    )
    anonymous_id = models.CharField(  # noqa: DJ001 - NULL: never seen anonymously
        max_length=200,
        null=True,
        blank=True,
        help_text="The SDK's anonymousId this profile was first known by.",
    )
    # Indexed by customer_merged_into, a partial index: a full one would take
    # an entry for every customer on each of their (frequent) updates.
    merged_into = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        db_index=False,
        related_name="merged_profiles",
        help_text="The customer this profile was merged into; its ids resolve there.",
    )
    merged_at = models.DateTimeField(null=True, blank=True)
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

    objects = CustomerQuerySet.as_manager()

    class Meta:
        # Unique constraints rather than unique=True: Django adds a second,
        # LIKE-only index to unique varchar columns, which nothing here uses
        # and every insert would pay for.
        constraints = [
            models.UniqueConstraint(fields=["external_id"], name="customer_external_id"),
            # Partial: most customers have none, and each update of a row
            # writes an entry in every index that covers it.
            models.UniqueConstraint(
                fields=["anonymous_id"],
                condition=Q(anonymous_id__isnull=False),
                name="customer_anonymous_id",
            ),
            models.CheckConstraint(
                condition=Q(external_id__isnull=False) | Q(anonymous_id__isnull=False),
                name="customer_has_an_id",
            ),
        ]
        indexes = [
            # Merged profiles among a batch's user ids: a probe of this small
            # index per id, before the customers are locked.
            models.Index(
                fields=["external_id"],
                condition=Q(merged_into__isnull=False),
                name="customer_merged_external",
            ),
            models.Index(
                fields=["merged_into"],
                condition=Q(merged_into__isnull=False),
                name="customer_merged_into",
            ),
            # Anonymous profiles past their time to live.
            models.Index(
                fields=["last_seen_at"],
                condition=ANONYMOUS,
                name="customer_anonymous_seen",
            ),
            models.Index(Upper("email"), name="customer_email_upper"),
            models.Index(fields=["phone"], name="customer_phone"),
            models.Index(fields=["touched_seq"], name="customer_touched"),
        ]

    def __str__(self) -> str:
        return self.external_id or f"anonymous {self.anonymous_id}"

    @property
    def is_known(self) -> bool:
        return self.external_id is not None and self.merged_into_id is None


class Event(models.Model):
    # Indexed by event_customer_name_at, which leads with the customer.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    name = models.CharField(max_length=200)
    properties = models.JSONField(
        default=dict, blank=True, encoder=DeepJSONEncoder, decoder=DeepJSONDecoder
    )
    # What the sending SDK said about where it happened (locale, zone, user
    # agent, campaign…: see schemas.KEPT_CONTEXT); NULL when nothing.
    context = models.JSONField(
        null=True, blank=True, encoder=DeepJSONEncoder, decoder=DeepJSONDecoder
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


class Account(models.Model):
    """A company (Segment's `group` call): renewals at a B2B business are
    decided per account. Its traits are what `{"account": C}` conditions
    test."""

    external_id = models.CharField(max_length=200, help_text="The business's own group id.")
    name = models.CharField(max_length=200, blank=True)
    traits = models.JSONField(
        default=dict, blank=True, encoder=DeepJSONEncoder, decoder=DeepJSONDecoder
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    members = models.ManyToManyField(Customer, through="AccountMembership", related_name="accounts")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["external_id"], name="account_external_id")]

    def __str__(self) -> str:
        return self.name or self.external_id


class AccountMembership(models.Model):
    """A customer belongs to an account (a user may belong to several);
    `grouped_at` is the latest `group` call, so templates know the current one."""

    # Indexed by the unique (customer, account) constraint.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="account_memberships", db_index=False
    )
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField()
    grouped_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "account"], name="membership_customer_account"
            )
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.account_id}"


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
