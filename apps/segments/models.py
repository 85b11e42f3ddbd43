from django.db import models
from django.db.models import Q

from apps.customers.models import Customer


class Segment(models.Model):
    class Kind(models.TextChoices):
        DYNAMIC = "dynamic", "Dynamic (a condition, refreshed every minute)"
        STATIC = "static", "Static (a list, uploaded)"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # The condition tree (DESIGN.md's condition language); empty for static segments.
    definition = models.JSONField(null=True, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DYNAMIC)
    is_active = models.BooleanField(default=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_ms = models.PositiveIntegerField(null=True, blank=True)
    member_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, help_text="Why the last refresh failed, if it did.")
    # The refresh lease: a refresh runs only while it holds the lease, claimed
    # by compare-and-set on this row (services.segment_refresh), so refreshes of
    # one segment never overlap, across processes and on both databases.
    refresh_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    refresh_lease_token = models.CharField(max_length=32, blank=True, editable=False)
    # What the open memberships of a dynamic segment reflect, so the next
    # refresh can re-evaluate only the customers that may have changed since
    # (see incremental.py): the customers' touch watermark and the digest of
    # the definition (nested segments included) at the last refresh, which ran
    # as of `refreshed_at`; and when the last full refresh ran, the safety net
    # repeated every SEGMENT_FULL_REFRESH_EVERY_S.
    refresh_watermark = models.BigIntegerField(null=True, blank=True, editable=False)
    refresh_digest = models.CharField(max_length=64, blank=True, editable=False)
    full_refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A static segment's list changes only by upload, which bumps this: the
    # segments nesting it then refresh in full.
    list_version = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """A stay of a customer in a segment. History is kept: leaving closes the
    row (`exited_at`), coming back opens a new one."""

    # No foreign key constraints in the database: checking them costs a lookup
    # and a row lock on the customer for every membership written (6 s of a
    # million-row first refresh). Only refreshes and uploads write memberships,
    # from ids they have just read, and deletes cascade through Django (the
    # ORM's on_delete, which does not need the constraint).
    # No index of its own: the open memberships of a segment, which refreshes,
    # counts and member lists read, are in the one-open index, which leads with
    # the segment. Another index on every row would cost each bulk write a
    # tenth more for what only reads a segment's closed rows too: deleting a
    # segment, simulating a journey on a static segment's history.
    segment = models.ForeignKey(
        Segment,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,
        db_constraint=False,
    )
    # Indexed by membership_customer_at, which leads with the customer: a second
    # index would only slow the bulk writes of a refresh down.
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        related_name="segment_memberships",
        db_index=False,
        db_constraint=False,
    )
    entered_at = models.DateTimeField()
    exited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "customer"],
                condition=Q(exited_at__isnull=True),
                name="membership_one_open",
            )
        ]
        indexes = [
            models.Index(fields=["customer", "entered_at"], name="membership_customer_at"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.segment_id}"


class SegmentSnapshot(models.Model):
    """The size of a segment, once a day, for its growth chart."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="snapshots")
    day = models.DateField()
    member_count = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "day"], name="snapshot_segment_day")
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} {self.day}: {self.member_count}"
