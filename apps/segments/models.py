from django.db import models
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

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
    # one segment never overlap, across processes.
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
    # A customer's memberships are found through two partial indexes, never one
    # on every row: the closed ones through membership_customer_closed, the open
    # ones through the one-open index, probed once per segment (see
    # `of_customer`). A refresh only opens memberships, so its bulk inserts
    # write no entry into an index that leads with the customer, where each
    # segment's members land all over the keys the other segments' members
    # already hold: that cost a third of the CPU of every insert (a
    # million-row first refresh wrote at half PostgreSQL's raw rate). Deleting
    # a customer (Django's cascade, by customer id alone) scans the table, as
    # deleting a segment does: both are rare.
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
            models.Index(
                fields=["customer", "entered_at"],
                condition=Q(exited_at__isnull=False),
                name="membership_customer_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.segment_id}"

    @staticmethod
    def of_customer(customer_id: int) -> Q:
        """This customer's memberships, open or closed, written so that each
        kind is read from its index: the open ones by `segment_id =
        ANY(ARRAY(every segment's id))`, which the one-open index (it leads
        with the segment) takes as a condition, one probe per segment (`IN
        (SELECT …)` would be tested row by row instead)."""
        table = Segment._meta.db_table
        column = f'"{SegmentMembership._meta.db_table}"."segment_id"'
        sql = f'{column} = ANY(ARRAY(SELECT "id" FROM "{table}"))'  # noqa: S608
        any_segment = RawSQL(sql, [], output_field=BooleanField())  # noqa: S611 - our SQL
        return Q(customer_id=customer_id) & (
            Q(exited_at__isnull=False) | (Q(exited_at__isnull=True) & Q(any_segment))
        )


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
