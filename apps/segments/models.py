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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    """A stay of a customer in a segment. History is kept: leaving closes the
    row (`exited_at`), coming back opens a new one."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    # Indexed by membership_customer_at, which leads with the customer: a second
    # index would only slow the bulk writes of a refresh down.
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="segment_memberships", db_index=False
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
