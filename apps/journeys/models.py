"""Journeys as versioned step graphs, and the customers travelling them.

A `JourneyVersion` is immutable once published; the journey's `draft` is what
the builder and `import_journey` edit, and publishing it makes the next
version. An `Enrollment` stays on the version it entered unless a publisher
moves it explicitly. Waits are rows: `next_run_at` says when the engine next
looks at an enrollment.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.customers.models import Customer
from apps.messaging.models import Message


class Journey(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        LIVE = "live", "Live"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    # The journey file (DESIGN.md) being edited; published as the next version.
    draft = models.JSONField(default=dict, blank=True)
    live_version = models.ForeignKey(
        "JourneyVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    paused_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class JourneyVersion(models.Model):
    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    published_at = models.DateTimeField()
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["journey", "number"], name="journeyversion_number")
        ]
        ordering = ("journey", "-number")

    def __str__(self) -> str:
        return f"{self.journey.slug} v{self.number}"

    def save(self, *args, **kwargs):
        # Enrollments run on a published version: it is never edited in place
        # (services.journey_publish makes a new one from the draft).
        if self.pk is not None:
            stored = JourneyVersion.objects.filter(pk=self.pk).values_list("definition", flat=True)
            before = stored.first()
            if before is not None and before != self.definition:
                from .graph import JourneyError

                raise JourneyError(
                    [("definition", f"{self} is published and immutable; edit the draft")]
                )
        super().save(*args, **kwargs)


class Enrollment(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        CONVERTED = "converted", "Converted (goal met)"
        EXITED = "exited", "Exited"
        FAILED = "failed", "Failed"

    # Denormalised from the version, for "one active enrollment per customer and journey".
    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="enrollments")
    journey_version = models.ForeignKey(
        JourneyVersion, on_delete=models.PROTECT, related_name="enrollments"
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    state = models.CharField(max_length=9, choices=State.choices, default=State.ACTIVE)
    current_node = models.CharField(max_length=100, blank=True)
    # When the engine next advances it (a wait is this time in the future).
    next_run_at = models.DateTimeField(null=True, blank=True)
    entered_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Trigger event, visits per node, wait_for_event deadline and the like.
    context = models.JSONField(default=dict, blank=True)
    is_holdout = models.BooleanField(default=False)
    # A claim by an engine tick (compare-and-set where SKIP LOCKED is unavailable).
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    exit_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "customer"],
                condition=Q(state="active"),
                name="enrollment_one_active",
            )
        ]
        indexes = [
            # The unclaimed ones only: a claim reads these in due order, and
            # never walks past the rows earlier ticks hold (up to
            # ENGINE_MAX_CLAIMED, all due before the rest).
            models.Index(
                fields=["next_run_at"],
                condition=Q(state="active", lease_token=""),
                name="enrollment_due",
            ),
            models.Index(fields=["customer", "entered_at"], name="enrollment_customer_at"),
            models.Index(
                fields=["journey_version", "current_node"],
                condition=Q(state="active"),
                name="enrollment_at_node",
            ),
            # The claimed ones only (a lease is cleared when the enrollment
            # moves): the tick counts those still outstanding without reading
            # every due row of a backlog.
            models.Index(
                fields=["lease_until"],
                condition=Q(state="active") & ~Q(lease_token=""),
                name="enrollment_claimed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.journey_id} ({self.state})"


class EnrollmentStep(models.Model):
    """What happened at one visit of one node: the answer to "why did (or
    didn't) this customer get that message?"."""

    # No index of its own: the unique (enrollment, node_id, visit) serves it.
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="steps", db_index=False
    )
    node_id = models.CharField(max_length=100)
    visit = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=30)
    detail = models.TextField(blank=True)
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["enrollment", "node_id", "visit"], name="step_enrollment_node_visit"
            )
        ]

    def __str__(self) -> str:
        return f"{self.node_id}#{self.visit}: {self.outcome}"


class TriggerFire(models.Model):
    """One firing of a date-trait or schedule trigger, written before anyone is
    enrolled. Its unique key is what keeps two overlapping checks, or a check
    re-run after a crash, from enrolling twice:

    - date trait: one row per journey, customer and target date
      (`key` = "<customer id>:<trait date>:<offset days>");
    - schedule: one row per journey and cron slot (`key` = "slot:<UTC time>",
      `customer` empty), however many members the slot enrolled.
    """

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="trigger_fires")
    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=False
    )
    key = models.CharField(max_length=100)
    fired_at = models.DateTimeField()
    # Enrollments it started (0: re-entry or an active enrollment stood in the way).
    enrolled = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["journey", "key"], name="triggerfire_key")]

    def __str__(self) -> str:
        return f"{self.journey_id} {self.key}"


class IngestWork(models.Model):
    """The journeys' work for one committed API ingest call: its stored events
    and changed customers, for event triggers, waits for an event and goals.

    Written in the ingest's own transaction (the customers' in-transaction
    hook), so the work exists exactly when the events do; the broker only
    carries its id. Processing claims the row by deleting it in the
    transaction that enrolls, so a row processed twice (a task and a
    sweeper's republication of it) enrolls once, and a failed run leaves it
    for the next. See `ingest_work`.
    """

    event_ids = models.JSONField(default=list)
    changed_customer_ids = models.JSONField(default=list)
    received_at = models.DateTimeField()
    # Set when the row is written, for the publication at its commit; cleared
    # when the broker refuses it. Empty, or older than
    # JOURNEY_INGEST_REPUBLISH_AFTER_S: the sweeper publishes it.
    published_at = models.DateTimeField(null=True, blank=True)
    # Failed processing runs (errors, not a lost broker message), the last
    # one's error, and when the next may be tried.
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_after = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"ingest work {self.pk} ({len(self.event_ids)} events)"
