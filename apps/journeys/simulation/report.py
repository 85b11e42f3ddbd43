"""What a backtest reports: the result, counted from the simulated rows
before they are rolled back, and the notes on what a replay cannot know."""

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count

from apps.messaging.models import Message

from ..graph import JourneyDefinition
from ..models import Enrollment, EnrollmentStep, Journey
from ..times import span

WOULD_SEND = (Message.Status.QUEUED, Message.Status.DEFERRED)


class SimulationError(ValueError):
    """A backtest that cannot run (no live version, an invalid draft, bad
    arguments); the message says why."""


@dataclass
class SimulationResult:
    journey: str
    name: str
    version: str  # "v3" or "draft"
    days: int
    start: datetime
    end: datetime
    entered: int = 0
    customers: int = 0
    held_out: int = 0
    converted: int = 0
    exited: int = 0
    completed: int = 0
    failed: int = 0
    active: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    deferred: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks_not_called: int = 0
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey,
            "name": self.name,
            "version": self.version,
            "days": self.days,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "entered": self.entered,
            "customers": self.customers,
            "held_out": self.held_out,
            "converted": self.converted,
            "exited": self.exited,
            "completed": self.completed,
            "failed": self.failed,
            "active": self.active,
            "messages": self.messages,
            "deferred": self.deferred,
            "suppressed": self.suppressed,
            "skipped": self.skipped,
            "errors": self.errors,
            "nodes": self.nodes,
            "webhooks_not_called": self.webhooks_not_called,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def result_count(
    result: SimulationResult, *, journey: Journey, definition: JourneyDefinition
) -> None:
    """Fill the result from the simulated rows of the scratch `journey`
    (before they are rolled back)."""
    enrollments = Enrollment.objects.filter(journey=journey)
    result.entered = enrollments.count()
    result.customers = enrollments.values("customer_id").distinct().count()
    result.held_out = enrollments.filter(is_holdout=True).count()
    states = dict(
        enrollments.order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    result.converted = states.get(Enrollment.State.CONVERTED, 0)
    result.exited = states.get(Enrollment.State.EXITED, 0)
    result.completed = states.get(Enrollment.State.COMPLETED, 0)
    result.failed = states.get(Enrollment.State.FAILED, 0)
    result.active = states.get(Enrollment.State.ACTIVE, 0)
    errors = Counter(
        enrollments.filter(state=Enrollment.State.FAILED).values_list("exit_reason", flat=True)
    )
    result.errors = dict(errors.most_common())

    messages = Message.objects.filter(enrollment_id__in=enrollments.values("pk"))
    sent: Counter[str] = Counter()
    by_reason: dict[str, Counter[str]] = defaultdict(Counter)
    rows = messages.order_by().values_list("channel", "status", "reason").annotate(n=Count("pk"))
    for channel, status, reason, n in rows:
        if status in WOULD_SEND:
            sent[channel] += n
        if status == Message.Status.DEFERRED:
            by_reason["deferred"][reason or "deferred"] += n
        elif status == Message.Status.SUPPRESSED:
            kind = "skipped" if reason.startswith("skipped") else "suppressed"
            by_reason[kind][reason or kind] += n
    result.messages = {channel: sent.get(channel, 0) for channel in ("email", "sms")}
    result.deferred = dict(by_reason["deferred"].most_common())
    result.suppressed = dict(by_reason["suppressed"].most_common())
    result.skipped = dict(by_reason["skipped"].most_common())

    steps = EnrollmentStep.objects.filter(enrollment__journey=journey)
    entered: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)
    rows = (
        steps.order_by()
        .values_list("node_id", "outcome")
        .annotate(n=Count("pk"), done=Count("finished_at"))
    )
    for node_id, outcome, n, done in rows:
        entered[node_id] += n
        completed[node_id] += done
        outcomes[node_id][outcome] += n
    for node in definition.nodes:
        result.nodes[node.id] = {
            "type": node.type,
            "entered": entered.get(node.id, 0),
            "completed": completed.get(node.id, 0),
            "outcomes": dict(outcomes[node.id].most_common()),
        }


def notes(
    definition: JourneyDefinition,
    segment_step: timedelta,
    result: SimulationResult,
    *,
    static_segment: bool = False,
) -> list[str]:
    trigger = definition.trigger
    notes = [
        "Traits are taken as they are today: branches, goals and segments that test a trait "
        "(plan, status, renewal_at, ...) see today's value at every moment of the replay.",
        "Events are seen only up to the virtual time: conditions, goals and waits for an event "
        "are evaluated as of each moment.",
        "Nothing was sent: the replay ran in a transaction that was rolled back, so no delivery "
        "was published and no provider was called.",
        "Consent, suppressions and templates are as they are today; frequency caps count the "
        "messages really sent (including later ones) as well as the simulated ones.",
    ]
    if trigger.type == "event":
        notes.append(
            f"Every recorded {trigger.event!r} event in the window enrolls, including imported "
            "ones (live, only events from the API start journeys)."
        )
    elif trigger.type in ("segment_entered", "segment_exited"):
        how = (
            "replayed from its recorded uploads"
            if static_segment
            else "(its definition today) re-evaluated"
        )
        every = span(segment_step)
        notes.append(
            f"The segment {trigger.segment!r}, {how}, was checked every {every}; customers "
            "already in it when the window opened did not enter."
        )
    elif trigger.type == "date_trait":
        notes.append(
            f"Date-trait fires come from today's {trigger.trait!r}: customers whose moment "
            f"({trigger.offset_days:+d} days at {trigger.at}, their zone) fell in the window."
        )
    elif trigger.type == "schedule":
        notes.append(f"Each cron slot enrolled the members {trigger.segment!r} had then.")
    if definition.holdout_percent:
        notes.append(
            f"{definition.holdout_percent}% holdout: held-out customers travel the graph but "
            "receive nothing; who is held out is drawn afresh for the backtest."
        )
    if result.webhooks_not_called:
        notes.append(
            f"{result.webhooks_not_called} webhook call(s) were not made; each was counted as "
            "answered with success."
        )
    if result.active:
        notes.append(
            f"{result.active} enrollment(s) were still in the journey when the window closed."
        )
    return notes
