"""Reads about journeys: lists for the admin, where customers are in a
journey, the step-by-step timelines, and the staleness rule of a resume."""

import json
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from .graph import JourneyDefinition, parse_journey
from .models import Enrollment, EnrollmentStep, Journey, JourneyVersion

DEFAULT_RESUME_STALENESS = timedelta(hours=24)


def resume_staleness() -> timedelta:
    """`JOURNEY_RESUME_STALENESS` (settings): seconds (the environment's
    `JOURNEY_RESUME_STALENESS_S`) or a timedelta; 24 hours by default."""
    value = getattr(settings, "JOURNEY_RESUME_STALENESS", DEFAULT_RESUME_STALENESS)
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def is_stale(enrollment: Enrollment, *, now: datetime) -> bool:
    """Whether a send this enrollment is due to make is too late to make.

    The engine asks this before running a send node (email, sms, nps_survey).
    A step is due at `next_run_at`; when that is more than
    `JOURNEY_RESUME_STALENESS` before `now` (a journey paused over the send's
    time and then resumed, or the engine kept from running that long), the
    message would arrive out of its moment ("your trial ends tomorrow", three
    days late), so the engine skips it, records the step as skipped with the
    lateness, and goes on to the next node. Waits, branches and the rest are
    never stale: they only move the customer along.
    """
    due = enrollment.next_run_at
    return due is not None and now - due > resume_staleness()


def journeys_for_admin() -> QuerySet[Journey]:
    """Journeys with `active_count`: one count per journey over the partial
    index of active enrollments, never a scan of finished ones."""
    active = (
        Enrollment.objects.filter(journey=OuterRef("pk"), state=Enrollment.State.ACTIVE)
        .order_by()
        .values("journey")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Journey.objects.select_related("live_version").annotate(
        active_count=Coalesce(Subquery(active, output_field=IntegerField()), Value(0))
    )


def active_enrollments_by_node(journey: Journey) -> list[dict]:
    """Where the journey's active enrollments are: one row per version and
    node, `{"version": n, "node": id, "count": k}`, for a publisher choosing
    a mapping."""
    rows = (
        Enrollment.objects.filter(journey=journey, state=Enrollment.State.ACTIVE)
        .order_by()
        .values("journey_version__number", "current_node")
        .annotate(count=Count("id"))
        .order_by("journey_version__number", "current_node")
    )
    return [
        {"version": r["journey_version__number"], "node": r["current_node"], "count": r["count"]}
        for r in rows
    ]


def enrollment_timeline(enrollment: Enrollment) -> QuerySet[EnrollmentStep]:
    """The steps of one enrollment in the order they happened."""
    return (
        EnrollmentStep.objects.filter(enrollment=enrollment)
        .select_related("message")
        .order_by("started_at", "id")
    )


def customer_enrollments(customer_id: int) -> QuerySet[Enrollment]:
    """A customer's enrollments, newest first (the enrollment_customer_at index)."""
    return (
        Enrollment.objects.filter(customer_id=customer_id)
        .select_related("journey", "journey_version")
        .order_by("-entered_at", "-id")
    )


def customer_timeline(customer_id: int, *, limit: int = 50) -> list[tuple[Enrollment, list]]:
    """The customer's newest enrollments, each with its steps in order: the
    answer to "why did (or didn't) this customer get that message?"."""
    enrollments = list(customer_enrollments(customer_id)[:limit])
    steps: dict[int, list[EnrollmentStep]] = {e.pk: [] for e in enrollments}
    rows = (
        EnrollmentStep.objects.filter(enrollment__in=list(steps))
        .select_related("message")
        .order_by("started_at", "id")
    )
    for step in rows:
        steps[step.enrollment_id].append(step)
    return [(e, steps[e.pk]) for e in enrollments]


@lru_cache(maxsize=256)
def _parsed(version_id: int, definition_json: str) -> JourneyDefinition:
    return parse_journey(json.loads(definition_json), check_refs=False)


def version_definition(version: JourneyVersion) -> JourneyDefinition:
    """The parsed graph of a published version, cached per process: a
    published version never changes, so it is parsed once, not per step. (The
    key includes the definition itself, so a database rolled back and reused
    by tests never serves another version's graph.)"""
    return _parsed(version.pk, json.dumps(version.definition, sort_keys=True))
