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
  enrollments advance through the engine's own `enrollments_advance`, whose
  sends go through `message_send_many` and its policies with the virtual
  `now`.
- Conditions (branches, goals, segments) are evaluated "as of" the virtual
  time, so they see events up to then only; traits are as they are today.
- Messages are written (the policies need them: frequency caps count them)
  and then rolled back with everything else: the delivery publication waits
  for a commit that never comes, so no provider is called. Webhook nodes are
  not called: their step is recorded as a success without a request.

The result is counted from the simulated rows before the rollback.

The package: `replay.py` moves the clock and does at each moment what the
triggers and the engine would have done; `report.py` is what a backtest
returns (the result, counted from the simulated rows, and the notes on what
a replay cannot know).
"""

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction

from apps.segments.models import Segment

from ..graph import JourneyDefinition, JourneyError, parse_journey
from ..models import Journey
from .replay import Replay
from .report import SimulationError, SimulationResult, notes, result_count

__all__ = [
    "DEFAULT_SEGMENT_STEP",
    "MAX_DAYS",
    "SimulationError",
    "SimulationResult",
    "journey_simulate",
]

MAX_DAYS = 366
DEFAULT_SEGMENT_STEP = timedelta(hours=1)


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
        replay = Replay(journey, definition, result, segment_step, on_progress)
        replay.run()
        result_count(result, journey=replay.scratch, definition=definition)
        transaction.set_rollback(True)
    static = replay.segment is not None and replay.segment.kind == Segment.Kind.STATIC
    result.notes = notes(definition, segment_step, result, static_segment=static)
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
