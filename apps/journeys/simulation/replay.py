"""The replay: a virtual clock moving a scratch copy of a journey through
the recorded history.

The clock steps from moment to moment (a recorded event that matters, a
simulated enrollment due, a segment check, a date-trait fire, a schedule
slot); at each moment the replay does for the scratch journey what the
triggers would have done, and advances its due enrollments through the
engine's own `enrollments_advance`, whose webhook calls it answers without
a request. Everything it writes is rolled back by `journey_simulate`.
"""

import secrets
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Min, Q
from django.db.models.fields.json import KeyTransform

from apps.customers.models import Customer, Event
from apps.segments.conditions import TraitTimeBetween, segment_queryset
from apps.segments.models import Segment, SegmentMembership

from .. import webhooks
from ..engine import enrollments_advance
from ..enrollment import (
    GOAL_STEP,
    SEGMENT_EXIT_STEP,
    enrollment_finish,
    enrollments_start,
    event_context,
    goal_reached,
    goal_reason,
    properties_match,
)
from ..graph import JourneyDefinition, canonical_journey
from ..models import Enrollment, Journey, JourneyVersion
from ..times import zone_named
from ..triggers import fire_moment, latest_slot, trait_date
from .report import SimulationError, SimulationResult

EVENT_PAGE = 5_000


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


class Replay:
    """One backtest's clock and its scratch journey (see the module docstring)."""

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
            zone, _ = zone_named(zone_name)
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
        """The engine's own advance, its webhook calls answered without a
        request (`_calls_answered`)."""
        enrollments_advance(ids, now=now, make_calls=self._calls_answered)

    def _calls_answered(self, pending: list[webhooks.PendingCall], *, now: datetime) -> list[int]:
        """A chunk's webhook calls recorded as made and answered with success,
        but never made (`webhooks.CallsMaker`); returns the enrollments that
        go on."""
        ready = []
        for call in pending:
            self.result.webhooks_not_called += 1
            outcome = webhooks.Outcome(ok=True, permanent=False, status=None, error="", ms=0)
            if webhooks.outcome_record(call, outcome, now=now):
                ready.append(call.enrollment_id)
        return ready
