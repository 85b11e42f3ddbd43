"""Writes to the suppression list and the consent ledger, and unsubscribing.

Two different things, kept apart on purpose:

- The **suppression list** is about an *address*: it bounced, complained,
  was invalid, unsubscribed, replied STOP or was added by hand. It is checked
  for every send. Bounces, complaints, invalid addresses, manual entries and
  SMS opt-outs block every message; an unsubscribe blocks marketing only, so
  a customer who unsubscribed still gets their receipts and password resets.
- The **consent ledger** is about a *customer's* choices per channel (and
  email topic): append-only `ConsentRecord`s with when, where from and what
  they were shown; the current state is derived from it (selectors).

Whatever stops messages to someone also cancels the messages already waiting
for them (queued or deferred): an unsubscribe must not be followed by the
message that was deferred to 8 o'clock.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from apps.customers.models import Customer

from .models import Category, Channel, ConsentRecord, Message, Suppression
from .selectors import (
    consent_from_latest,
    consent_latest_many,
    consent_state,
    normalize_address,
    pending_messages,
)
from .transitions import messages_cancel

__all__ = [
    "BLOCKS_TRANSACTIONAL",
    "SUPPRESSION_WORDS",
    "Suppress",
    "Unsubscribe",
    "UnsubscribeResult",
    "consent_record",
    "consent_state",
    "messages_cancel",
    "suppression_add",
    "suppression_lift",
    "suppressions_add",
    "unsubscribe",
    "unsubscribe_many",
]

R = Suppression.Reason
# What each reason is called in a message's `reason` ("suppressed: bounced").
SUPPRESSION_WORDS = {
    R.BOUNCE: "bounced",
    R.COMPLAINT: "spam complaint",
    R.UNSUBSCRIBE: "unsubscribed",
    R.MANUAL: "added by hand",
    R.INVALID: "invalid address",
    R.SMS_OPT_OUT: "replied STOP",
}
# Reasons that stop transactional messages too (an unsubscribe does not).
BLOCKS_TRANSACTIONAL = frozenset({R.BOUNCE, R.COMPLAINT, R.INVALID, R.MANUAL, R.SMS_OPT_OUT})


# --- suppression list --------------------------------------------------------


def suppression_add(
    *, channel: str, address: str, reason: str, source: str, now: datetime, detail: str = ""
) -> Suppression:
    """Suppress an address (email lower-cased, phone E.164). Idempotent: while
    an address is suppressed, adding it again returns the row in force (the
    first reason stands) and writes nothing new. Waiting messages to the
    address that the reason blocks are cancelled. Raises ValueError naming a
    bad channel, address or reason."""
    if reason not in R.values:
        raise ValueError(f"reason: must be one of {', '.join(R.values)}, got {reason!r}")
    address = normalize_address(channel, address)
    suppression = Suppression.objects.filter(
        channel=channel, address=address, lifted_at__isnull=True
    ).first()
    if suppression is None:
        try:
            with transaction.atomic():
                suppression = Suppression.objects.create(
                    channel=channel,
                    address=address,
                    reason=reason,
                    source=source[:100],
                    detail=detail,
                    created_at=now,
                )
        except IntegrityError:
            # Someone suppressed it at the same moment: theirs stands.
            suppression = Suppression.objects.get(
                channel=channel, address=address, lifted_at__isnull=True
            )
    _cancel_suppressed(channel, reason, [address], now=now)
    return suppression


@dataclass(frozen=True)
class Suppress:
    """One address for `suppressions_add` (already normalised)."""

    channel: str
    address: str
    reason: str
    source: str
    detail: str = ""


def suppressions_add(items: Sequence[Suppress], *, now: datetime) -> None:
    """`suppression_add` for many addresses at once (a webhook batch's
    bounces): one insert, where an address already suppressed keeps its row
    in force (the one-active-row constraint skips ours), and one
    cancellation of waiting messages per channel and reason."""
    Suppression.objects.bulk_create(
        [
            Suppression(
                channel=item.channel,
                address=item.address,
                reason=item.reason,
                source=item.source[:100],
                detail=item.detail,
                created_at=now,
            )
            for item in items
        ],
        ignore_conflicts=True,
    )
    groups: dict[tuple[str, str], list[str]] = {}
    for item in items:
        groups.setdefault((item.channel, item.reason), []).append(item.address)
    for (channel, reason), addresses in sorted(groups.items()):
        _cancel_suppressed(channel, reason, addresses, now=now)


def _cancel_suppressed(channel: str, reason: str, addresses: Sequence[str], *, now) -> None:
    """Cancel the waiting messages to these addresses that `reason` blocks."""
    waiting = Message.objects.filter(channel=channel, to_address__in=list(addresses))
    if reason not in BLOCKS_TRANSACTIONAL:
        waiting = waiting.filter(category=Category.MARKETING)
    messages_cancel(waiting, reason=f"cancelled: {SUPPRESSION_WORDS[reason]}", now=now)


def suppression_lift(
    *, channel: str, address: str, now: datetime, by: str = ""
) -> Suppression | None:
    """Lift the suppression in force for an address; the row stays, with who
    lifted it and when. None if the address was not suppressed."""
    address = normalize_address(channel, address)
    suppression = Suppression.objects.filter(
        channel=channel, address=address, lifted_at__isnull=True
    ).first()
    if suppression is None:
        return None
    lifted = Suppression.objects.filter(pk=suppression.pk, lifted_at__isnull=True).update(
        lifted_at=now, lifted_by=by[:150]
    )
    if not lifted:
        return None  # lifted by someone else meanwhile
    suppression.lifted_at, suppression.lifted_by = now, by[:150]
    return suppression


# --- consent ledger ----------------------------------------------------------


def _choice(field: str, value: str, choices) -> str:
    if value not in choices.values:
        raise ValueError(f"{field}: must be one of {', '.join(choices.values)}, got {value!r}")
    return value


def consent_record(
    *,
    customer: Customer | int,
    channel: str,
    status: str,
    source: str,
    recorded_at: datetime,
    topic: str = "",
    wording: str = "",
    ip_address: str | None = None,
    user_agent: str = "",
) -> ConsentRecord:
    """Append a record to the consent ledger. Every way consent arrives (the
    API, identify traits, imports, the preference centre, unsubscribe links,
    SMS keywords, provider reports) writes through here.

    A revocation cancels the customer's waiting messages it covers: marketing
    email (of that topic, if it names one), or any SMS (SMS always needs
    consent). Raises ValueError naming the offending field."""
    _choice("channel", channel, Channel)
    _choice("status", status, ConsentRecord.Status)
    _choice("source", source, ConsentRecord.Source)
    if recorded_at.tzinfo is None:
        raise ValueError("recorded_at: must be an aware datetime")
    topic = topic or ""
    if topic:
        if channel != Channel.EMAIL:
            raise ValueError("topic: topics are for email only")
        if slugify(topic) != topic or len(topic) > 50:
            raise ValueError(
                f"topic: must be a slug of at most 50 letters, digits, - or _, got {topic!r}"
            )
    if ip_address:
        try:
            validate_ipv46_address(ip_address)
        except ValidationError:
            raise ValueError(f"ip: {ip_address!r} is not an IP address") from None
    customer_id = customer if isinstance(customer, int) else customer.pk
    record = ConsentRecord.objects.create(
        customer_id=customer_id,
        channel=channel,
        topic=topic,
        status=status,
        source=source,
        wording=wording or "",
        ip_address=ip_address or None,
        user_agent=(user_agent or "")[:500],
        recorded_at=recorded_at,
    )
    if status == ConsentRecord.Status.REVOKED:
        _cancel_revoked(channel, [customer_id], topic=topic, now=recorded_at)
    return record


def _cancel_revoked(channel: str, customer_ids: Iterable[int], *, topic: str = "", now) -> None:
    """Cancel the customers' waiting messages a revocation covers: marketing
    email (of that topic, if it names one), or any SMS."""
    waiting = Message.objects.filter(channel=channel, customer_id__in=list(customer_ids))
    if channel == Channel.EMAIL:
        waiting = waiting.filter(category=Category.MARKETING)
        if topic:
            waiting = waiting.filter(topic=topic)
    what = f"{channel} topic {topic}" if topic else channel
    messages_cancel(waiting, reason=f"cancelled: consent revoked ({what})", now=now)


# --- unsubscribe -------------------------------------------------------------


@dataclass(frozen=True)
class UnsubscribeResult:
    suppression: Suppression
    consent: ConsentRecord | None  # None when consent was already revoked
    cancelled: int  # waiting messages cancelled


@transaction.atomic
def unsubscribe(
    *,
    now: datetime,
    source: str = ConsentRecord.Source.UNSUBSCRIBE,
    message: Message | None = None,
    customer: Customer | None = None,
    channel: str = Channel.EMAIL,
    address: str | None = None,
    wording: str = "",
    ip_address: str | None = None,
    user_agent: str = "",
) -> UnsubscribeResult:
    """Unsubscribe a recipient from marketing on a channel, at once: the
    address is suppressed (reason unsubscribe), the customer's consent for
    the channel is revoked in the ledger (unless it already is), and waiting
    marketing messages to the address are cancelled ("cancelled:
    unsubscribed"). Transactional messages still go.

    From a message (the `/u/<token>` link: its recipient, channel and
    address) or from a customer and channel (their address on file unless
    `address` is given). Repeating it changes nothing more."""
    if message is not None:
        customer_id, channel, address = message.customer_id, message.channel, message.to_address
    elif customer is not None:
        customer_id = customer.pk
        if address is None:
            address = customer.email if channel == Channel.EMAIL else customer.phone
    else:
        raise ValueError("unsubscribe needs a message or a customer")
    if not address:
        raise ValueError(f"the customer has no {channel} address to unsubscribe")
    address = normalize_address(channel, address)
    waiting = pending_messages(channel=channel, address=address).filter(category=Category.MARKETING)
    cancelled = messages_cancel(waiting, reason="cancelled: unsubscribed", now=now)
    suppression = suppression_add(
        channel=channel, address=address, reason=R.UNSUBSCRIBE, source=str(source), now=now
    )
    record = None
    if consent_state(customer_id, channel) is not False:
        record = consent_record(
            customer=customer_id,
            channel=channel,
            status=ConsentRecord.Status.REVOKED,
            source=source,
            recorded_at=now,
            wording=wording,
            ip_address=ip_address,
            user_agent=user_agent,
        )
    return UnsubscribeResult(suppression=suppression, consent=record, cancelled=cancelled)


@dataclass(frozen=True)
class Unsubscribe:
    """One recipient for `unsubscribe_many` (the address already normalised)."""

    customer_id: int
    channel: str
    address: str
    wording: str = ""


def unsubscribe_many(items: Sequence[Unsubscribe], *, source: str, now: datetime) -> None:
    """`unsubscribe` for many recipients at once (a provider's batch of
    unsubscribe events): the addresses suppressed (`suppressions_add`), and
    each customer's consent for the channel revoked in the ledger unless it
    already is, in one insert, cancelling what the revocations cover."""
    if not items:
        return
    suppressions_add(
        [Suppress(item.channel, item.address, R.UNSUBSCRIBE, str(source)) for item in items],
        now=now,
    )
    revoking: dict[tuple[int, str], Unsubscribe] = {}
    for item in items:
        revoking.setdefault((item.customer_id, item.channel), item)
    latest = consent_latest_many({customer_id for customer_id, _ in revoking})
    revoking = {
        key: item
        for key, item in revoking.items()
        if consent_from_latest(latest.get(key, {})) is not False
    }
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                customer_id=customer_id,
                channel=channel,
                status=ConsentRecord.Status.REVOKED,
                source=source,
                wording=item.wording,
                recorded_at=now,
            )
            for (customer_id, channel), item in sorted(revoking.items())
        ]
    )
    by_channel: dict[str, list[int]] = {}
    for customer_id, channel in sorted(revoking):
        by_channel.setdefault(channel, []).append(customer_id)
    for channel, customer_ids in by_channel.items():
        _cancel_revoked(channel, customer_ids, now=now)


def unsubscribe_from_link(message: Message, *, now: datetime, **details) -> UnsubscribeResult:
    """`unsubscribe` from a message's own link (`/u/<token>`), recorded as the
    customer event `unsubscribed` as well, so segments, goals and the
    deliverability report see it. The event's messageId is the message's, so
    a repeated click records it once."""
    from apps.customers.schemas import TrackIn
    from apps.customers.services import ingest

    with transaction.atomic():
        result = unsubscribe(message=message, now=now, **details)
        customer = Customer.objects.only("external_id").get(pk=message.customer_id)
        properties = {
            "message_id": message.pk,
            "channel": message.channel,
            "journey": message.journey,
            "node_id": message.node_id,
            "template": message.template.slug if message.template_id else "",
            "via": "link",
        }
        ingest(
            [
                TrackIn(
                    userId=customer.external_id,
                    event="unsubscribed",
                    properties=properties,
                    timestamp=now,
                    messageId=f"unsubscribe:{message.pk}",
                )
            ],
            received_at=now,
        )
    return result
