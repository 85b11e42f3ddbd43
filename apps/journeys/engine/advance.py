"""Advancing a chunk of claimed enrollments through their graphs.

A worker (`enrollments_advance`) takes a chunk in one transaction, its rows
locked and loaded at once with their customers (their journeys and versions
read once per chunk, and the open steps of the visits they are at, in one
query): each node visit records an `EnrollmentStep` (unique per enrollment,
node and visit) in the same transaction as its side effect and the
enrollment's move, so a crash rolls all of it back and a re-run finds either
nothing or everything; a side effect that must be found by a re-run carries
the visit's key (`enr:<enrollment>:<node>:<visit>`: a message's idempotency
key). The enrollments walk their graphs side by side: every send node the
chunk reaches is collected and sent in ONE `message_send_many` call
(policies, render and the Messages in bulk, deliveries published on commit),
and every branch's condition is tested for the chunk's customers at that
node in one query (as the goals are, before any node); then each enrollment
goes on from its answer (again, for a send after a branch, or two sends
without a wait between). Steps and the enrollments' new state are written in
bulk at the end of the chunk. A node that raises rolls the chunk back whole;
the chunk is then done again one enrollment per savepoint, each send on its
own, so the failing one fails with the error recorded and the others go on.
A template that does not render is not an exception: its Message is failed,
and so is that enrollment alone. Waits are `next_run_at` in the future, never
Celery countdowns.

Webhook calls are the one side effect outside the database: the step is
committed first ("calling"), the POST is made after the chunk's transaction,
and its outcome is recorded in a second transaction (see `webhooks.py`).
Who makes the calls is `enrollments_advance`'s `make_calls`: the network by
default, the backtest's pretend calls in a simulation.
"""

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from apps.messaging.services import SendRequest

from .. import webhooks
from ..enrollment import (
    GOAL_STEP,
    enrollment_finish,
    enrollments_matching,
    goal_reached,
    goal_reason,
    goals_reached,
)
from ..models import Enrollment, EnrollmentStep, Journey, JourneyVersion
from .nodes import HANDLERS
from .visit import Check, Move, NewStep, Run, Unit

logger = logging.getLogger(__name__)

# Nodes one advance may pass without waiting: the validator refuses cycles
# without a wait, so reaching this means stored data the validator never saw.
MAX_STEPS_PER_ADVANCE = 100
# Rounds of "call the webhooks, then advance those enrollments" per task.
WEBHOOK_ROUNDS = 5


@dataclass
class AdvanceResult:
    advanced: int = 0  # enrollments moved (or put back to wait)
    steps: int = 0  # node visits recorded or completed
    failed: int = 0
    skipped: int = 0  # not due, finished, locked by another worker, or journey paused


def enrollments_advance(
    ids: Sequence[int], *, now: datetime, make_calls: webhooks.CallsMaker | None = None
) -> AdvanceResult:
    """Advance each of these enrollments that is active and due (as of `now`)
    until it waits or ends. Safe to run twice, or concurrently with itself:
    rows are locked (`SKIP LOCKED`: another worker's are left to it), and an
    enrollment already moved on is simply not due any more.

    The chunk is advanced in one transaction; the webhook calls it reached
    are then made by `make_calls` (by default `webhooks.calls_make`, over the
    network), which records their outcomes and names the enrollments that
    can go on, and those are advanced again (up to WEBHOOK_ROUNDS times).
    The backtest passes calls that are answered without a request."""
    make_calls = make_calls or webhooks.calls_make
    result = AdvanceResult()
    pending = _advance_chunk(list(ids), now=now, result=result)
    for _ in range(WEBHOOK_ROUNDS):
        if not pending:
            break
        done = make_calls(pending, now=now)
        pending = _advance_chunk(done, now=now, result=result) if done else []
    return result


def _advance_chunk(
    ids: list[int], *, now: datetime, result: AdvanceResult
) -> list[webhooks.PendingCall]:
    """Advance a chunk in one transaction. First all together, with the rows'
    writes gathered and made in bulk at the end; if anything raises, that
    attempt is rolled back whole (messages and deliveries included: they
    publish on commit) and the chunk is done again one enrollment at a time,
    each in a savepoint, so the failing one fails alone and the others go on."""
    try:
        attempt = AdvanceResult()
        unit = _advance_locked(ids, now=now, result=attempt, careful=False)
    except Exception:
        logger.info("chunk of %d enrollments: a node failed; advancing them one by one", len(ids))
        attempt = AdvanceResult()
        unit = _advance_locked(ids, now=now, result=attempt, careful=True)
    for name in ("advanced", "steps", "failed", "skipped"):
        setattr(result, name, getattr(result, name) + getattr(attempt, name))
    return unit.pending


def _advance_locked(ids: list[int], *, now: datetime, result: AdvanceResult, careful: bool):
    unit = Unit()
    with transaction.atomic():
        due = (
            Enrollment.objects.filter(
                pk__in=ids, state=Enrollment.State.ACTIVE, next_run_at__lte=now
            )
            .select_related("customer")
            .order_by("pk")
        )
        # Another worker on the same rows (a re-published chunk) keeps them;
        # this one moves on.
        due = due.select_for_update(skip_locked=True, of=("self",))
        enrollments = list(due)
        _journeys_attach(enrollments)
        result.skipped += len(ids) - len(enrollments)
        live = []
        for enrollment in enrollments:
            if enrollment.journey.status != Journey.Status.LIVE:
                # Paused since the claim: let go, so a resume finds it at once.
                enrollment.lease_until, enrollment.lease_token = None, ""
                unit.enrollments.append(enrollment)
                result.skipped += 1
            else:
                live.append(enrollment)
        unit.steps_open = _open_steps(live)
        if not careful:
            unit.goals = goals_reached(live, unit.definitions, now=now)
            walks = [_advance_one(enrollment, unit, now=now) for enrollment in live]
            result.steps += _walk_together(walks, now=now)
            result.advanced += len(walks)
            live = []
        for enrollment in live:  # careful: each alone, in a savepoint
            mark = unit.mark()
            try:
                with transaction.atomic():
                    steps = _walk_together([_advance_one(enrollment, unit, now=now)], now=now)
            except Exception as exc:
                logger.exception("enrollment %s failed", enrollment.pk)
                unit.undo(mark)
                enrollment_fail(enrollment, error=f"{type(exc).__name__}: {exc}", now=now)
                result.failed += 1
            else:
                result.steps += steps
                result.advanced += 1
                unit.flush()  # outside the next one's savepoint
        unit.flush()
    return unit


# An enrollment's way through its graph in one advance (`_advance_one`): a
# generator that yields what it must ask (a send, a branch's condition), is
# sent back the answer (a Message, a bool), and returns the steps it recorded.
Walk = Generator["SendRequest | Check", Any, int]


def _walk_together(walks: list[Walk], *, now: datetime) -> int:
    """Drive these walks to their ends together: each goes until it waits,
    ends or asks; what they ask is answered for all at once: the sends in
    ONE `message_send_many` call (in the walks' order), the branches' checks
    in one query per node; each walk is handed its answer and goes on. Again
    while any asks more (a send after a branch, two sends without a wait
    between them). Returns the steps recorded."""
    from apps.messaging.services import message_send_many

    steps = 0
    going: list[tuple[Walk, Any]] = [(walk, None) for walk in walks]
    while going:
        asking: list[tuple[Walk, SendRequest | Check]] = []
        for walk, answer in going:
            try:
                asking.append((walk, walk.send(answer)))  # send(None) starts it
            except StopIteration as done:
                steps += done.value
        if not asking:
            break
        answers: list[Any] = [None] * len(asking)
        sends = [n for n, (_, ask) in enumerate(asking) if isinstance(ask, SendRequest)]
        if sends:
            messages = message_send_many([asking[n][1] for n in sends], now=now)
            for n, message in zip(sends, messages, strict=True):
                answers[n] = message
        checks: dict[tuple[int, str], list[int]] = {}
        for n, (_, ask) in enumerate(asking):
            if isinstance(ask, Check):
                checks.setdefault(ask.node, []).append(n)
        for positions in checks.values():
            asked = [asking[n][1] for n in positions]
            met = enrollments_matching(
                asked[0].condition, [(a.enrollment_id, a.customer_id) for a in asked], now=now
            )
            for n, check in zip(positions, asked, strict=True):
                answers[n] = check.enrollment_id in met
        going = [(walk, answer) for (walk, _), answer in zip(asking, answers, strict=True)]
    return steps


def _journeys_attach(enrollments: Sequence[Enrollment]) -> None:
    """Give the enrollments their journey and version, each read once for
    the chunk (a join would decode a version's definition once per row)."""
    journeys = Journey.objects.defer("draft").in_bulk({e.journey_id for e in enrollments})
    versions = JourneyVersion.objects.in_bulk({e.journey_version_id for e in enrollments})
    for enrollment in enrollments:
        enrollment.journey = journeys[enrollment.journey_id]
        enrollment.journey_version = versions[enrollment.journey_version_id]


def _open_steps(enrollments: Sequence[Enrollment]) -> dict[tuple[int, str, int], EnrollmentStep]:
    """The steps of the visits these enrollments are at (a wait in progress, a
    webhook's recorded call), in one query: (enrollment, node, visit) → step."""
    wanted = {}
    for enrollment in enrollments:
        context = enrollment.context if isinstance(enrollment.context, dict) else {}
        node_id = enrollment.current_node
        visit = (context.get("visits") or {}).get(node_id) if node_id else None
        if visit is not None:
            wanted[(enrollment.pk, node_id, visit)] = None
    if not wanted:
        return {}
    found = EnrollmentStep.objects.filter(
        enrollment_id__in=sorted({key[0] for key in wanted}),
        node_id__in=sorted({key[1] for key in wanted}),
    )
    return {
        key: step
        for step in found
        if (key := (step.enrollment_id, step.node_id, step.visit)) in wanted
    }


def _advance_one(enrollment: Enrollment, unit: Unit, *, now: datetime) -> Walk:
    """Move one (locked, active, due) enrollment until it waits or ends;
    returns the steps recorded. Its writes are gathered in `unit`. A
    generator (a `Walk`): at a send node it yields the SendRequest and goes
    on with the Message it is sent back (`_walk_together`)."""
    definition = unit.definitions.get(enrollment.journey_version)
    if unit.goals is not None:
        met = enrollment.pk in unit.goals
    else:
        met = goal_reached(definition, enrollment, now=now)
    if met:
        reason = goal_reason(definition)
        unit.steps_new.append(
            NewStep(enrollment.pk, GOAL_STEP, 1, now, now, Enrollment.State.CONVERTED, reason)
        )
        _finish(enrollment, unit, state=Enrollment.State.CONVERTED, reason=reason, now=now)
        return 1
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    enrollment.context = context
    visits = context.setdefault("visits", {})
    node_id = enrollment.current_node or definition.start
    fresh = node_id not in visits
    if fresh:
        visits[node_id] = 1
    steps = 0
    while True:
        if steps >= MAX_STEPS_PER_ADVANCE:
            raise RuntimeError(
                f"passed {MAX_STEPS_PER_ADVANCE} nodes without waiting (a cycle with no wait?)"
            )
        node = definition.node(node_id)
        visit = visits[node_id]
        step = None
        if not fresh:
            step = unit.steps_open.get((enrollment.pk, node_id, visit))
        run = Run(enrollment, definition, node, visit, step, now, unit)
        move = HANDLERS[node.type](run)
        while move.kind == "ask":
            move = move.then((yield move.ask))
        steps += 1
        enrollment.current_node = node_id
        if move.kind == "hold":
            # The claim stays: the call is made after commit, then recorded.
            unit.enrollments.append(enrollment)
            return steps
        _record(run, move)
        if move.kind == "wait":
            enrollment.next_run_at = move.until
            enrollment.lease_until, enrollment.lease_token = None, ""
            unit.enrollments.append(enrollment)
            return steps
        if move.kind == "end" or move.target is None:
            state = move.state or Enrollment.State.COMPLETED
            reason = move.detail if move.kind == "end" else f"reached the end after {node_id!r}"
            _finish(enrollment, unit, state=state, reason=reason, now=now)
            return steps
        node_id = move.target
        visits[node_id] = visits.get(node_id, 0) + 1
        fresh = True


def _finish(enrollment: Enrollment, unit: Unit, *, state: str, reason: str, now: datetime) -> None:
    enrollment.state, enrollment.finished_at, enrollment.next_run_at = state, now, None
    enrollment.exit_reason = reason[:300]
    enrollment.lease_until, enrollment.lease_token = None, ""
    unit.enrollments.append(enrollment)


def _record(run: Run, move: Move) -> None:
    finished = None if move.kind == "wait" else run.now
    if run.step is None:
        run.unit.steps_new.append(
            NewStep(
                enrollment_id=run.enrollment.pk,
                node_id=run.node.id,
                visit=run.visit,
                started_at=run.now,
                finished_at=finished,
                outcome=move.outcome[:30],
                detail=move.detail,
                message_id=move.message.pk if move.message is not None else None,
            )
        )
    else:
        # A step finished earlier (a webhook's recorded call) keeps its time.
        run.step.finished_at = run.step.finished_at or finished
        run.step.outcome = move.outcome[:30]
        run.step.detail = move.detail
        run.step.message = move.message or run.step.message
        run.unit.steps_changed.append(run.step)


def enrollment_fail(enrollment: Enrollment, *, error: str, now: datetime) -> None:
    """Fail one enrollment (its node raised): the step of the node it was at
    says why. Runs after the node's savepoint rolled back, so it reads the
    enrollment as it was before the attempt."""
    enrollment.refresh_from_db()
    if enrollment.state != Enrollment.State.ACTIVE:
        return
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    node_id = enrollment.current_node or "(start)"
    visit = context.get("visits", {}).get(node_id, 1)
    EnrollmentStep.objects.update_or_create(
        enrollment_id=enrollment.pk,
        node_id=node_id,
        visit=visit,
        defaults={"outcome": "failed", "detail": error, "finished_at": now},
        create_defaults={
            "outcome": "failed",
            "detail": error,
            "finished_at": now,
            "started_at": now,
        },
    )
    enrollment_finish(enrollment, state=Enrollment.State.FAILED, reason=error, now=now)
