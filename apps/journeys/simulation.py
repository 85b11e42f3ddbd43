"""Backtests: what a journey would have done over the last N days.

`journey_simulate` replays the recorded history through the real engine on a
virtual clock, inside a transaction that is rolled back, so nothing it does
survives and nothing is sent:

- A scratch copy of the journey (live version, or the draft) is made inside
  the transaction, so the customers' real enrollments neither block nor mix
  with the simulated ones (re-entry and "one active enrollment" are judged
  among the simulated ones only).
- The clock steps from moment to moment: each recorded event that matters
  (the trigger's, a `wait_for_event`'s, the goal's), each time a simulated
  enrollment is due (`next_run_at`), each check of the trigger's segment, each
  date-trait fire and schedule slot. At each moment the triggers enroll as
  they would have (`enrollments_start`, the engine's own insert with re-entry
  and holdout), goals convert, waits for an event wake, and the due
  enrollments advance through the engine's own chunks, whose sends go
  through `message_send_many` and its policies with the virtual `now`.
- Conditions (branches, goals, segments) are evaluated "as of" the virtual
  time, so they see events up to then only; traits are as they are today.
- Messages are written (the policies need them: frequency caps count them)
  and then rolled back with everything else: the delivery publication waits
  for a commit that never comes, so no provider is called. Webhook nodes are
  not called: their step is recorded as a success without a request.

The result is counted from the simulated rows before the rollback.
"""

import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Min, Q
from django.db.models.fields.json import KeyTransform

from apps.customers.models import Customer, Event
from apps.messaging.models import Message
from apps.segments.conditions import TraitTimeBetween, segment_queryset
from apps.segments.models import Segment, SegmentMembership

from . import engine, webhooks
from .enrollment import (
    GOAL_STEP,
    SEGMENT_EXIT_STEP,
    enrollment_finish,
    enrollments_start,
    event_context,
    goal_reached,
    goal_reason,
    properties_match,
)
from .graph import JourneyDefinition, JourneyError, canonical_journey, parse_journey
from .models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from .triggers import fire_moment, latest_slot, trait_date

MAX_DAYS = 366
DEFAULT_SEGMENT_STEP = timedelta(hours=1)
EVENT_PAGE = 5_000
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


def journey_simulate(
    journey: Journey,
    *,
    days: int,
    now: datetime,
    draft: bool = False,
    segment_step: timedelta = DEFAULT_SEGMENT_STEP,
    on_progress: Callable[[float], None] | None = None,
) -> SimulationResult:
    """Backtest `journey` (its live version, or its draft with `draft`) over
    the `days` before `now`; see the module docstring. `on_progress(hours)`
    is told how much virtual time went by since its last call. Raises
    SimulationError when the backtest cannot run."""
    if now.tzinfo is None:
        raise SimulationError("now must be an aware datetime")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise SimulationError(f"days: must be a whole number from 1 to {MAX_DAYS} (got {days!r})")
    if segment_step < timedelta(minutes=1):
        raise SimulationError("the segment check step must be at least a minute")
    definition, label = _definition(journey, draft=draft)
    started = time.monotonic()
    result = SimulationResult(
        journey=journey.slug,
        name=definition.name,
        version=label,
        days=days,
        start=now - timedelta(days=days),
        end=now,
    )
    with transaction.atomic():
        # Everything in this block is undone: an error rolls it back, and so
        # does the end (set_rollback cannot come first: a transaction marked
        # for rollback refuses every further query).
        replay = _Replay(journey, definition, result, segment_step, on_progress)
        replay.run()
        replay.count()
        transaction.set_rollback(True)
    static = replay.segment is not None and replay.segment.kind == Segment.Kind.STATIC
    result.notes = _notes(definition, segment_step, result, static_segment=static)
    result.elapsed_s = time.monotonic() - started
    return result


def _definition(journey: Journey, *, draft: bool) -> tuple[JourneyDefinition, str]:
    if draft:
        if not journey.draft:
            raise SimulationError(f"journey {journey.slug!r} has no draft")
        try:
            return parse_journey(journey.draft), "draft"
        except JourneyError as exc:
            raise SimulationError(f"the draft of {journey.slug!r} is not valid: {exc}") from None
    if journey.live_version_id is None:
        raise SimulationError(
            f"journey {journey.slug!r} has never been published; backtest its draft (--draft)"
        )
    version = journey.live_version
    try:
        return parse_journey(version.definition, check_refs=False), f"v{version.number}"
    except JourneyError as exc:  # stored by an older Tenure, say
        raise SimulationError(f"version {version.number} does not parse: {exc}") from None


# --- the replay -----------------------------------------------------------------------


def _event_names(condition: Any) -> set[str]:
    """Event names a condition tree mentions (goals convert when one arrives)."""
    found: set[str] = set()
    if isinstance(condition, dict):
        if isinstance(condition.get("event"), str):
            found.add(condition["event"])
        if isinstance(condition.get("nps"), str):
            found.add("nps_responded")  # NPS conditions read the survey answers' events
        for value in condition.values():
            found |= _event_names(value)
    elif isinstance(condition, list):
        for item in condition:
            found |= _event_names(item)
    return found


class _Replay:
    def __init__(
        self,
        journey: Journey,
        definition: JourneyDefinition,
        result: SimulationResult,
        segment_step: timedelta,
        on_progress: Callable[[float], None] | None,
    ) -> None:
        self.definition = definition
        self.result = result
        self.start, self.end = result.start, result.end
        self.step = segment_step
        self.on_progress = on_progress
        self.clock = self.start
        self.trigger = definition.trigger
        self.scratch, self.version = self._scratch(journey, definition)
        self.waits = {node.id: node for node in definition.nodes if node.type == "wait_for_event"}
        self.goal_events = _event_names(definition.goal) if definition.goal else set()
        names = set(self.goal_events) | {node.event for node in self.waits.values()}
        if self.trigger.type == "event":
            names.add(self.trigger.event)
        self.event_names = sorted(names)
        self.events = self._events()
        self.pending_event: Event | None = next(self.events, None)
        self.fires = self._date_fires() if self.trigger.type == "date_trait" else []
        self.slots = self._slots() if self.trigger.type == "schedule" else []
        self.segment: Segment | None = None
        self.members: set[int] = set()
        self.next_check: datetime | None = None
        if self.trigger.type in ("segment_entered", "segment_exited", "schedule"):
            self.segment = self._segment(self.trigger.segment)
        if self.trigger.type in ("segment_entered", "segment_exited"):
            self.members = self._members(self.start)
            self.next_check = self.start + self.step

    # -- set-up ---------------------------------------------------------------

    def _scratch(
        self, journey: Journey, definition: JourneyDefinition
    ) -> tuple[Journey, JourneyVersion]:
        """A live copy of the journey that only this transaction sees."""
        suffix = f"~backtest-{secrets.token_hex(4)}"
        scratch = Journey.objects.create(
            slug=journey.slug[: 100 - len(suffix)] + suffix,
            name=f"{definition.name} (backtest)"[:200],
            description=journey.description,
            status=Journey.Status.LIVE,
        )
        version = JourneyVersion.objects.create(
            journey=scratch,
            number=1,
            definition=canonical_journey(definition),
            published_at=self.start,
        )
        scratch.live_version = version
        scratch.save(update_fields=["live_version"])
        return scratch, version

    def _events(self) -> Iterator[Event]:
        """The events that matter, in time order, a page at a time."""
        if not self.event_names:
            return
        after: tuple[datetime, int] | None = None
        base = Event.objects.filter(
            name__in=self.event_names, occurred_at__gt=self.start, occurred_at__lte=self.end
        ).order_by("occurred_at", "pk")
        while True:
            page = base
            if after is not None:
                at, pk = after
                page = page.filter(Q(occurred_at__gt=at) | Q(occurred_at=at, pk__gt=pk))
            rows = list(page[:EVENT_PAGE])
            yield from rows
            if len(rows) < EVENT_PAGE:
                return
            after = (rows[-1].occurred_at, rows[-1].pk)

    def _date_fires(self) -> list[tuple[datetime, int, str]]:
        """(moment, customer, target date) of every fire in the window, from
        the trait as it is today (the engine's own date and moment rules)."""
        trigger = self.trigger
        offset = timedelta(days=trigger.offset_days)
        low = self.start - offset - timedelta(days=2)
        high = self.end - offset + timedelta(days=2)
        candidates = (
            Customer.objects.filter(Q(TraitTimeBetween(trigger.trait, low, high, strict=False)))
            .annotate(trait_value=KeyTransform(trigger.trait, "traits"))
            .values_list("pk", "timezone", "trait_value")
            .order_by("pk")
        )
        fires = []
        for pk, zone_name, value in candidates.iterator(chunk_size=2_000):
            zone, _ = engine.zone_named(zone_name)
            target = trait_date(value, zone)
            if target is None:
                continue
            moment = fire_moment(target, trigger.offset_days, trigger.at, zone)
            if self.start < moment <= self.end:
                fires.append((moment, pk, target.isoformat()))
        fires.sort()
        return fires

    def _slots(self) -> list[datetime]:
        slots = []
        until = self.end
        while True:
            slot = latest_slot(self.trigger.cron, after=self.start, until=until)
            if slot is None:
                break
            slots.append(slot)
            until = slot - timedelta(minutes=1)
        return sorted(slots)

    def _segment(self, slug: str) -> Segment:
        segment = Segment.objects.filter(slug=slug).first()
        if segment is None:
            raise SimulationError(f"the trigger's segment {slug!r} does not exist")
        return segment

    def _members(self, at: datetime) -> set[int]:
        """The segment's members at `at`: a dynamic segment's condition (as
        defined today) evaluated as of then; a static list's recorded history
        (who had been uploaded and not yet removed)."""
        segment = self.segment
        if segment.kind == Segment.Kind.DYNAMIC:
            query = segment_queryset(segment.definition, now=at).order_by().values_list("pk")
        else:
            query = (
                SegmentMembership.objects.filter(segment=segment, entered_at__lte=at)
                .filter(Q(exited_at__isnull=True) | Q(exited_at__gt=at))
                .order_by()
                .values_list("customer_id")
            )
        return {pk for (pk,) in query}

    # -- the clock ------------------------------------------------------------

    def run(self) -> None:
        while True:
            moment = self._next_moment()
            if moment is None or moment > self.end:
                break
            self._tick(moment)
        self._move_clock(self.end)

    def _next_moment(self) -> datetime | None:
        candidates = []
        if self.pending_event is not None:
            candidates.append(self.pending_event.occurred_at)
        if self.next_check is not None:
            candidates.append(self.next_check)
        if self.fires:
            candidates.append(self.fires[0][0])
        if self.slots:
            candidates.append(self.slots[0])
        due = self._active().aggregate(due=Min("next_run_at"))["due"]
        if due is not None:
            # Something due before the clock is done now (it cannot be in the past).
            candidates.append(max(due, self.clock))
        return min(candidates) if candidates else None

    def _move_clock(self, moment: datetime) -> None:
        if self.on_progress and moment > self.clock:
            self.on_progress((moment - self.clock).total_seconds() / 3600)
        self.clock = max(self.clock, moment)

    def _active(self):
        return Enrollment.objects.filter(journey=self.scratch, state=Enrollment.State.ACTIVE)

    def _tick(self, now: datetime) -> None:
        self._move_clock(now)
        events = []
        while self.pending_event is not None and self.pending_event.occurred_at <= now:
            events.append(self.pending_event)
            self.pending_event = next(self.events, None)
        if events:
            self._events_arrived(events, now=now)
        if self.next_check is not None and self.next_check <= now:
            self._segment_check(now)
            self.next_check = now + self.step
        fired: list[tuple[int, str]] = []
        while self.fires and self.fires[0][0] <= now:
            _, pk, target = self.fires.pop(0)
            fired.append((pk, target))
        if fired:
            self._date_fired(fired, now=now)
        while self.slots and self.slots[0] <= now:
            slot = self.slots.pop(0)
            self._slot(slot, now=now)
        self._advance_due(now)

    # -- what happens at a moment ---------------------------------------------

    def _events_arrived(self, events: list[Event], *, now: datetime) -> None:
        """As `triggers.events_received` does for live data, for this journey
        only: goals first, then waits for an event, then the event trigger."""
        customers = sorted({e.customer_id for e in events})
        if self.goal_events and any(e.name in self.goal_events for e in events):
            active = self._active().filter(customer_id__in=customers).order_by("pk")
            for enrollment in active:
                if goal_reached(self.definition, enrollment, now=now):
                    enrollment_finish(
                        enrollment,
                        state=Enrollment.State.CONVERTED,
                        reason=goal_reason(self.definition),
                        now=now,
                        step=GOAL_STEP,
                    )
        for node in self.waits.values():
            arrived = sorted(
                {
                    e.customer_id
                    for e in events
                    if e.name == node.event and properties_match(e.properties, node.where)
                }
            )
            if arrived:
                # A wake is a hint, as live: the node checks the event itself.
                self._active().filter(
                    current_node=node.id, customer_id__in=arrived, next_run_at__gt=now
                ).update(next_run_at=now)
        if self.trigger.type == "event":
            contexts: dict[int, dict[str, Any]] = {}
            for event in events:
                if event.name != self.trigger.event or event.customer_id in contexts:
                    continue
                if properties_match(event.properties, self.trigger.where):
                    contexts[event.customer_id] = {"event": event_context(event)}
            if contexts:
                self._enroll(
                    list(contexts),
                    now=now,
                    context={"trigger": {"type": "event", "event": self.trigger.event}},
                    contexts=contexts,
                )

    def _segment_check(self, now: datetime) -> None:
        members = self._members(now)
        entered, exited = members - self.members, self.members - members
        self.members = members
        slug = self.trigger.segment
        if exited and self.definition.exit_on_segment_exit:
            reason = f"left the segment {slug!r}"
            for enrollment in self._active().filter(customer_id__in=sorted(exited)):
                enrollment_finish(
                    enrollment,
                    state=Enrollment.State.EXITED,
                    reason=reason,
                    now=now,
                    step=SEGMENT_EXIT_STEP,
                )
        ids = entered if self.trigger.type == "segment_entered" else exited
        if ids:
            self._enroll(
                sorted(ids),
                now=now,
                context={"trigger": {"type": self.trigger.type, "segment": slug}},
            )

    def _date_fired(self, fired: list[tuple[int, str]], *, now: datetime) -> None:
        trigger = self.trigger
        contexts = {
            pk: {
                "trigger": {
                    "type": "date_trait",
                    "trait": trigger.trait,
                    "date": target,
                    "offset_days": trigger.offset_days,
                }
            }
            for pk, target in fired
        }
        self._enroll(list(contexts), now=now, contexts=contexts)

    def _slot(self, slot: datetime, *, now: datetime) -> None:
        members = sorted(self._members(slot))
        context = {
            "trigger": {
                "type": "schedule",
                "segment": self.trigger.segment,
                "slot": slot.isoformat(),
            }
        }
        self._enroll(members, now=now, context=context)

    def _enroll(
        self,
        customer_ids: list[int],
        *,
        now: datetime,
        context: dict[str, Any] | None = None,
        contexts: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        enrollments_start(
            journey=self.scratch,
            version=self.version,
            customer_ids=customer_ids,
            now=now,
            context=context,
            contexts=contexts,
        )

    def _advance_due(self, now: datetime) -> None:
        """Advance every simulated enrollment due by `now` until it waits or
        ends, through the engine's own chunk processing."""
        chunk = max(1, settings.ENGINE_CHUNK_SIZE)
        done: set[int] = set()
        while True:
            due = list(
                self._active()
                .filter(next_run_at__lte=now)
                .order_by("next_run_at", "pk")
                .values_list("pk", flat=True)
            )
            if not due:
                return
            stuck = sorted(done.intersection(due))
            if stuck:
                # An advance leaves an enrollment waiting or ended; one still
                # due would spin the clock at this moment for ever.
                raise SimulationError(
                    f"enrollment(s) {stuck[:5]} stayed due at {now.isoformat()} after advancing"
                )
            for start in range(0, len(due), chunk):
                self._advance(due[start : start + chunk], now=now)
            done.update(due)

    def _advance(self, ids: list[int], *, now: datetime) -> None:
        """`engine.enrollments_advance` without the network: a webhook node's
        call is recorded as made and answered, but never made."""
        result = engine.AdvanceResult()
        pending = engine._advance_chunk(ids, now=now, result=result)
        for _ in range(engine.WEBHOOK_ROUNDS):
            if not pending:
                break
            ready = []
            for call in pending:
                self.result.webhooks_not_called += 1
                outcome = webhooks.Outcome(ok=True, permanent=False, status=None, error="", ms=0)
                if webhooks.outcome_record(call, outcome, now=now):
                    ready.append(call.enrollment_id)
            pending = engine._advance_chunk(ready, now=now, result=result) if ready else []

    # -- counting -------------------------------------------------------------

    def count(self) -> None:
        """Fill the result from the simulated rows (before they are rolled back)."""
        result = self.result
        enrollments = Enrollment.objects.filter(journey=self.scratch)
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
        rows = (
            messages.order_by().values_list("channel", "status", "reason").annotate(n=Count("pk"))
        )
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

        steps = EnrollmentStep.objects.filter(enrollment__journey=self.scratch)
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
        for node in self.definition.nodes:
            result.nodes[node.id] = {
                "type": node.type,
                "entered": entered.get(node.id, 0),
                "completed": completed.get(node.id, 0),
                "outcomes": dict(outcomes[node.id].most_common()),
            }


def _notes(
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
        every = engine.span(segment_step)
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
