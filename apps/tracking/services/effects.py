"""What a batch of engagement does, once the processor has read it
(`processing`): machine engagement flagged, messages moved forward (through
`apps.messaging.transitions`), addresses suppressed, and a customer `Event`
recorded for each human engagement. Each takes the batch's occurrences in
time order and acts on them in bulk.
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from apps.customers.schemas import TrackIn
from apps.customers.services import ingest
from apps.messaging import consent, transitions
from apps.messaging.models import Channel, ConsentRecord, Message, Suppression
from apps.messaging.selectors import normalize_address

from ..detection import click_too_soon, scanner_agent
from ..events import EMAIL_EVENTS, SMS_EVENTS, Outcome
from ..models import Engagement

logger = logging.getLogger(__name__)

K = Engagement.Kind
S = Message.Status


@dataclass
class MessageRow:
    """What processing needs of a message (one joined query per batch:
    `processing._MSG_FIELDS`, in this order)."""

    id: int
    customer_id: int
    external_id: str
    channel: str
    journey: str
    node_id: str
    template: str | None
    status: str
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    failed_at: datetime | None
    error: str
    is_test: bool
    to_address: str


@dataclass
class Occurrence:
    """One engagement or report of a message (or, unmatched, of an address)."""

    message: MessageRow | None
    occurred_at: datetime
    source: str
    outcome: Outcome
    channel: str
    address: str = ""
    provider_event_id: int | None = None
    machine_reason: str = ""
    link_id: int | None = None


def flag_machines(occurrences: list[Occurrence]) -> None:
    """Opens and clicks a scanner's user agent made, and clicks that came too
    soon after delivery (the delivery time as stored, or as reported earlier
    in this same batch, else the send time), are machine engagement."""
    delivered: dict[int, datetime] = {}
    for o in occurrences:  # in time order
        if o.message is None or o.machine_reason:
            continue
        kind = o.outcome.engagement
        if kind == K.DELIVERED:
            delivered.setdefault(o.message.id, o.occurred_at)
        if kind not in (K.OPEN, K.CLICK):
            continue
        marker = scanner_agent(o.outcome.user_agent)
        if marker is not None:
            o.machine_reason = f"scanner user agent ({marker})"
        elif kind == K.CLICK:
            reference = o.message.delivered_at or delivered.get(o.message.id) or o.message.sent_at
            o.machine_reason = click_too_soon(clicked_at=o.occurred_at, delivered_at=reference)


def advance_messages(occurrences: Sequence[Occurrence], *, now: datetime) -> int:
    """Move each message through its occurrences in time order, as far as the
    transition table allows (never backwards: a late `delivered` after an
    `opened` moves nothing), and fill each timestamp the first time its state
    is reached; one statement for the batch (`transitions.messages_advance`)."""
    changes: dict[int, transitions.Advance] = {}
    for o in occurrences:
        message, outcome = o.message, o.outcome
        if message is None or outcome.status is None:
            continue
        change = changes.get(message.id)
        if change is None:
            change = changes[message.id] = transitions.Advance(
                message.id, old=message.status, new=message.status
            )
        if transitions.can_move(change.new, outcome.status):
            change.new = outcome.status
        at = o.occurred_at
        if outcome.engagement == K.DELIVERED:
            change.delivered_at = change.delivered_at or at
        elif outcome.engagement in (K.OPEN, K.CLICK):
            change.opened_at = change.opened_at or at  # a click is an open, too
            if outcome.engagement == K.CLICK:
                change.clicked_at = change.clicked_at or at
        elif outcome.status in (S.BOUNCED, S.FAILED):
            change.failed_at = change.failed_at or at
            if change.error is None:
                change.error = outcome.detail
    by_id = {o.message.id: o.message for o in occurrences if o.message is not None}
    wanted = [change for change in changes.values() if _changes_something(by_id[change.id], change)]
    transitions.messages_advance(wanted, now=now)
    return sum(1 for change in wanted if change.new != change.old)


def _changes_something(message: MessageRow, change: transitions.Advance) -> bool:
    """Whether the update would change the message (read under its row
    lock): a status move, or a timestamp or error filled for the first time.
    Most engagement of a message after its first changes nothing."""
    if change.new != change.old:
        return True
    if any(getattr(change, name) and getattr(message, name) is None for name in _STAMPS):
        return True
    return change.error is not None and message.error == ""


_STAMPS = ("delivered_at", "opened_at", "clicked_at", "failed_at")


def suppress_addresses(occurrences: Sequence[Occurrence], *, now: datetime) -> int:
    """Suppress the addresses that bounced, were dropped, complained or
    unsubscribed (matched to a message or not: the address is in the event);
    an unsubscribe of a known customer also revokes their consent (messaging's
    `unsubscribe`); a resubscribe through the provider lifts the unsubscribe it
    reported. An address that cannot be one is logged and skipped."""
    wanted: dict[tuple[str, str], Occurrence] = {}
    for o in occurrences:
        if not (o.outcome.suppress or o.outcome.lift_unsubscribe) or not o.address:
            continue
        try:
            address = normalize_address(o.channel, o.address)
        except ValueError as exc:
            logger.warning("tracking: %s event for %r not acted on: %s", o.source, o.address, exc)
            continue
        wanted[(o.channel, address)] = o  # in time order: the latest wins
    # An address already suppressed needs nothing more for a bounce, a drop or
    # a complaint (SendGrid drops every later message to a bounced address):
    # one query instead of a service call each. Unsubscribes and resubscribes
    # always go through, for their consent records.
    active = _actively_suppressed(
        [
            key
            for key, o in wanted.items()
            if not (o.outcome.revokes_consent or o.outcome.lift_unsubscribe)
        ]
    )
    plain = []
    unsubscribes = []
    for (channel, address), o in sorted(wanted.items()):
        if (channel, address) in active:
            continue
        if o.outcome.lift_unsubscribe:
            _lift_unsubscribe(channel, address, o, now=now)
        elif o.outcome.revokes_consent and o.message is not None:
            unsubscribes.append((channel, address, o))
        else:
            plain.append((channel, address, o))
    consent.unsubscribe_many(
        [
            consent.Unsubscribe(
                customer_id=o.message.customer_id,
                channel=channel,
                address=address,
                wording=f"Unsubscribed through {o.source} ({o.outcome.detail or 'unsubscribe'}).",
            )
            for channel, address, o in unsubscribes
        ],
        source=ConsentRecord.Source.PROVIDER,
        now=now,
    )
    if len(plain) == 1:
        channel, address, o = plain[0]
        consent.suppression_add(
            channel=channel,
            address=address,
            reason=o.outcome.suppress,
            source=f"{o.source} {o.outcome.engagement or 'event'}",
            now=now,
            detail=o.outcome.detail,
        )
    elif plain:
        consent.suppressions_add(
            [
                consent.Suppress(
                    channel, address, o.outcome.suppress,
                    f"{o.source} {o.outcome.engagement or 'event'}", o.outcome.detail,
                )
                for channel, address, o in plain
            ],
            now=now,
        )  # fmt: skip
    return len(unsubscribes) + len(plain)


def _actively_suppressed(keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    rows = Suppression.objects.filter(
        lifted_at__isnull=True, address__in={address for _, address in keys}
    ).values_list("channel", "address")
    return set(rows) & set(keys)


# Suppression sources of an unsubscribe a provider reported.
_PROVIDER_SOURCES = (ConsentRecord.Source.PROVIDER, "sendgrid")


def _lift_unsubscribe(channel: str, address: str, o: Occurrence, *, now: datetime) -> None:
    """A resubscribe through the provider lifts only an unsubscribe the
    provider reported (never a bounce, a complaint, a manual block nor an
    unsubscribe the customer made through our own link)."""
    active = Suppression.objects.filter(
        channel=channel, address=address, lifted_at__isnull=True
    ).first()
    if active is None or active.reason != Suppression.Reason.UNSUBSCRIBE:
        return
    if not active.source.startswith(_PROVIDER_SOURCES):
        return
    consent.suppression_lift(channel=channel, address=address, now=now, by=o.source)
    if o.message is not None:
        consent.consent_record(
            customer=o.message.customer_id,
            channel=channel,
            status=ConsentRecord.Status.GRANTED,
            source=ConsentRecord.Source.PROVIDER,
            recorded_at=o.occurred_at,
            wording=f"Resubscribed through {o.source}.",
        )


def record_events(occurrences: Sequence[Occurrence], *, now: datetime) -> int:
    """A customer event per human engagement of a real (not test) message.
    The messageId makes each state one event per message (the first open,
    the first click of each link, ...) whichever source reported it first."""
    calls = []
    for o in occurrences:
        message, kind = o.message, o.outcome.engagement
        if message is None or message.is_test or kind is None:
            continue
        names = EMAIL_EVENTS if message.channel == Channel.EMAIL else SMS_EVENTS
        name = names.get(kind)
        if name is None:
            continue
        properties = {
            "message_id": message.id,
            "channel": message.channel,
            "journey": message.journey,
            "node_id": message.node_id,
            "template": message.template or "",
            "source": o.source,
        }
        key = _EVENT_KEYS.get(kind, kind)
        if kind == K.CLICK:
            properties["url"] = o.outcome.url
            key = f"clicked:{hashlib.sha256(o.outcome.url.encode()).hexdigest()[:16]}"
        elif kind == K.RESUBSCRIBE:
            key = f"resubscribed:{o.provider_event_id}"
        if o.outcome.detail and kind in (K.BOUNCE, K.DROPPED, K.FAILED):
            properties["reason"] = o.outcome.detail
        calls.append(
            TrackIn(
                userId=message.external_id,
                event=name,
                properties=properties,
                timestamp=o.occurred_at,
                messageId=f"msg:{message.id}:{key}",
            )
        )
    if not calls:
        return 0
    return ingest(calls, received_at=now, source="api").events_stored


# One event per message for these states, whichever source reports them.
_EVENT_KEYS = {
    K.DELIVERED: "delivered",
    K.OPEN: "opened",
    K.BOUNCE: "bounced",
    K.DROPPED: "bounced",
    K.FAILED: "failed",
    K.COMPLAINT: "complained",
    K.UNSUBSCRIBE: "unsubscribed",
}
