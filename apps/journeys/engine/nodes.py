"""The node handlers: what each node type does on a visit.

A handler takes the visit (`Run`) and returns what it decided (`Move`,
`visit.py`); `HANDLERS` maps a node type to its handler. A send node does
not send by itself: it asks, and the chunk sends all its enrollments'
messages in one `message_send_many` call; a branch asks its condition the
same way. A new node type has its schema in `graph/schema.py` and its handler here.
"""

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from apps.customers.models import CONTACT_FIELDS, Event
from apps.customers.schemas import IdentifyIn
from apps.customers.services import customer_save
from apps.messaging.models import Message
from apps.messaging.services import SendRequest

from .. import webhooks
from ..enrollment import describe_condition, properties_match
from ..models import Enrollment
from ..selectors import is_stale
from ..times import customer_zone, next_local_time, span, when
from .visit import Check, Move, Run, end, go, wait

SENT_STATUSES = {
    Message.Status.QUEUED,
    Message.Status.SENDING,
    Message.Status.SENT,
    Message.Status.DELIVERED,
    Message.Status.OPENED,
    Message.Status.CLICKED,
}


def _skip_stale(run: Run) -> Move:
    """A send or survey too late to make sense (paused past the staleness
    limit): skipped, saying when it was due."""
    due = run.enrollment.next_run_at
    return go(
        run.node.next,
        "skipped",
        f"skipped: stale, due {when(due)}, {span(run.now - due)} late "
        "(the journey was paused or the engine stopped)",
    )


def _send(run: Run) -> Move:
    node, enrollment = run.node, run.enrollment
    if is_stale(enrollment, now=run.now):
        return _skip_stale(run)
    if enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not sent")
    # Sent with the chunk's other sends; the step is written with the move,
    # in the transaction that writes the Message (a rerun of this visit finds
    # the Message by its key and sends nothing again).
    request = SendRequest(
        customer=enrollment.customer,
        template=run.unit.template(node.template),
        idempotency_key=run.key,
        context=_send_context(enrollment),
        journey=enrollment.journey.slug,
        node_id=node.id,
        enrollment_id=enrollment.pk,
        over_cap=node.over_cap or "skip",
    )
    label = f"{node.type} {node.template!r}"
    return Move(
        "ask",
        ask=request,
        then=lambda message: _sent(node, message, f"{label} (message #{message.pk})"),
    )


def _send_context(enrollment: Enrollment) -> dict[str, Any]:
    context = enrollment.context if isinstance(enrollment.context, dict) else {}
    return {
        "event": context.get("event"),
        "journey": {"slug": enrollment.journey.slug, "name": enrollment.journey.name},
    }


def _sent(node: Any, message: Message, label: str) -> Move:
    """Where a send node goes once `message_send` has decided."""
    if message.status in SENT_STATUSES:
        return go(node.next, "sent", f"sent: {label}", message)
    if message.status == Message.Status.DEFERRED:
        until = when(message.send_after) if message.send_after else "later"
        why = message.reason.removeprefix("deferred: ")
        detail = f"deferred until {until}" + (f": {why}" if why else "") + f"; {label}"
        return go(node.next, "deferred", detail, message)
    if message.status == Message.Status.SUPPRESSED:
        reason = message.reason or "suppressed"
        outcome = "skipped" if reason.startswith("skipped") else "suppressed"
        return go(node.next, outcome, reason, message)
    if message.status == Message.Status.FAILED:
        error = message.error or "no reason given"
        return end(Enrollment.State.FAILED, "failed", f"{label} failed: {error}", message)
    # bounced, complained, unknown: the message of an earlier run of this visit.
    return go(node.next, message.status, f"{message.get_status_display()}: {label}", message)


def _nps_survey(run: Run) -> Move:
    """Invite the customer to the survey (apps/surveys): an invitation, and
    its message sent with the eleven score links as `links.nps`. A customer
    surveyed within NPS_RESURVEY_AFTER_DAYS is skipped, the step saying when
    they were; otherwise the message's fate moves the enrollment as a send
    node's does."""
    from apps.surveys.services import UnknownSurvey, survey_invite

    node, enrollment = run.node, run.enrollment
    if is_stale(enrollment, now=run.now):
        return _skip_stale(run)
    if enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not surveyed")
    run.open_step("sending")
    try:
        invited = survey_invite(
            customer=enrollment.customer,
            survey=node.survey,
            channel=node.channel,
            idempotency_key=run.key,
            now=run.now,
            context=_send_context(enrollment),
            journey=enrollment.journey.slug,
            node_id=node.id,
            enrollment_id=enrollment.pk,
        )
    except (UnknownSurvey, ValueError) as exc:
        return end(Enrollment.State.FAILED, "failed", f"nps_survey {node.survey!r}: {exc}")
    if invited.message is None:
        return go(node.next, "skipped", invited.skipped)
    message = invited.message
    label = f"NPS survey {node.survey!r} by {node.channel} (message #{message.pk})"
    return _sent(node, message, label)


def _wait(run: Run) -> Move:
    node = run.node
    started = run.step.started_at if run.step else run.now
    until = started + node.duration.timedelta
    if run.now >= until:
        return go(node.next, "waited", f"waited {span(node.duration.timedelta)}")
    return wait(until, "waiting", f"waiting {span(node.duration.timedelta)}, until {when(until)}")


def _wait_until(run: Run) -> Move:
    node = run.node
    zone, note = customer_zone(run.enrollment.customer)
    started = run.step.started_at if run.step else run.now
    until = next_local_time(started, zone, node.time, node.weekdays)
    days = f" on {', '.join(node.weekdays)}" if node.weekdays else ""
    suffix = f"; {note}" if note else ""
    if run.now >= until:
        return go(
            node.next, "waited", f"waited until {node.time}{days}, {when(until, zone)}{suffix}"
        )
    return wait(until, "waiting", f"waiting until {node.time}{days}: {when(until, zone)}{suffix}")


def _event_arrived(run: Run, since: datetime) -> Event | None:
    node = run.node
    events = Event.objects.filter(
        customer_id=run.enrollment.customer_id,
        name=node.event,
        occurred_at__gte=since,
        occurred_at__lte=run.now,
    ).order_by("occurred_at", "pk")
    for event in events.iterator(chunk_size=100):
        if properties_match(event.properties, node.where):
            return event
    return None


def _wait_for_event(run: Run) -> Move:
    node = run.node
    started = run.step.started_at if run.step else run.now
    deadline = started + node.timeout.timedelta
    where = f" with {node.where}" if node.where else ""
    event = _event_arrived(run, started)
    if event is not None:
        return go(
            node.yes,
            "yes",
            f"yes: {node.event}{where} arrived at {when(event.occurred_at)}",
        )
    if run.now >= deadline:
        return go(
            node.no,
            "no",
            f"no: no {node.event}{where} within {span(node.timeout.timedelta)}",
        )
    return wait(deadline, "waiting", f"waiting for {node.event}{where} until {when(deadline)}")


def _branch(run: Run) -> Move:
    """Asks its condition with the chunk's other enrollments at this node."""
    node, enrollment = run.node, run.enrollment
    words = describe_condition(node.condition)
    check = Check(
        node.condition,
        (enrollment.journey_version_id, node.id),
        enrollment.pk,
        enrollment.customer_id,
    )

    def then(yes: bool) -> Move:
        if yes:
            return go(node.yes, "yes", f"branch yes because {words}")
        return go(node.no, "no", f"branch no because not: {words}")

    return Move("ask", ask=check, then=then)


def split_branch(enrollment_id: int, node_id: str, weights: Sequence[int]) -> int:
    """The branch index for this enrollment: stable, in proportion to weights."""
    digest = hashlib.blake2b(f"{enrollment_id}:{node_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % sum(weights)
    for index, weight in enumerate(weights):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable")


def _split(run: Run) -> Move:
    weights = [branch.weight for branch in run.node.branches]
    index = split_branch(run.enrollment.pk, run.node.id, weights)
    return go(
        run.node.branches[index].next,
        f"branch {index + 1}",
        f"split: branch {index + 1} of {len(weights)} (weight {weights[index]} of {sum(weights)})",
    )


def _update_traits(run: Run) -> Move:
    node = run.node
    customer = run.enrollment.customer
    try:
        IdentifyIn(userId=customer.external_id, traits=dict(node.traits))
    except ValueError as exc:
        return end(Enrollment.State.FAILED, "failed", f"update_traits refused: {exc}")
    run.open_step("updating")
    traits = dict(customer.traits or {})
    for key, value in node.traits.items():
        if value is None:
            traits.pop(key, None)
        else:
            traits[key] = value
    customer.traits = traits
    changed = [c for c in CONTACT_FIELDS if c in node.traits]
    for column in changed:
        setattr(customer, column, node.traits[column] or "")
    customer_save(customer, changed=changed)
    shown = ", ".join(
        f"removed {k}" if v is None else f"{k} = {v!r}" for k, v in sorted(node.traits.items())
    )
    return go(node.next, "updated", f"traits: {shown}")


def _webhook(run: Run) -> Move:
    node = run.node
    if run.enrollment.is_holdout:
        return go(node.next, "holdout", "holdout: not called")
    step = run.step
    if step is not None and step.finished_at is not None:
        # The call's outcome, recorded after it was made (webhooks.calls_make).
        if step.outcome == "failed" and node.on_failure == "fail":
            return end(Enrollment.State.FAILED, "failed", step.detail)
        return go(node.next, step.outcome, step.detail)
    run.open_step("calling", f"POST {node.url}")
    run.unit.pending.append(webhooks.pending_call(run))
    return Move("hold")


def _exit(run: Run) -> Move:
    return end(Enrollment.State.COMPLETED, "completed", "reached the exit")


HANDLERS: dict[str, Callable[[Run], Move]] = {
    "email": _send,
    "sms": _send,
    "nps_survey": _nps_survey,
    "wait": _wait,
    "wait_until": _wait_until,
    "wait_for_event": _wait_for_event,
    "branch": _branch,
    "split": _split,
    "update_traits": _update_traits,
    "webhook": _webhook,
    "exit": _exit,
}
