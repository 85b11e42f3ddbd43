"""Reads for messaging: the suppression list, the consent ledger's current
state, and a customer's messages."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from apps.customers.models import Customer
from apps.customers.validation import E164, validate_email

from .models import Channel, ConsentRecord, Message, Suppression

# How long before a cap's window a message may have been created and still go
# inside it (deferred by quiet hours or by an earlier cap).
DEFERRAL_LOOKBACK = timedelta(days=60)


@lru_cache(maxsize=4096)  # a send checks its address twice; validating an email is not cheap
def normalize_address(channel: str, address: str) -> str:
    """The form addresses are stored and compared in: email lower-cased,
    phone numbers E.164 (spaces, dots, dashes and brackets dropped). Raises
    ValueError naming the problem when the address cannot be one."""
    address = (address or "").strip()
    if not address and channel in Channel.values:
        raise ValueError(f"no {channel} address given")
    if channel == Channel.EMAIL:
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ValueError(exc.messages[0]) from None
        return address.lower()
    if channel == Channel.SMS:
        phone = "".join(ch for ch in address if ch not in " .-()")
        if phone.startswith("00"):
            phone = "+" + phone[2:]
        if not E164.match(phone):
            raise ValueError(f"{address!r} is not an E.164 phone number (like +14155550123)")
        return phone
    raise ValueError(f"unknown channel {channel!r} (email or sms)")


def active_suppression(channel: str, address: str) -> Suppression | None:
    """The suppression in force for an address, if any (at most one: a
    unique constraint on channel and address among the unlifted rows)."""
    try:
        address = normalize_address(channel, address)
    except ValueError:
        return None
    return Suppression.objects.filter(
        channel=channel, address=address, lifted_at__isnull=True
    ).first()


def active_suppressions(
    pairs: Iterable[tuple[str, str]],
) -> dict[tuple[str, str], Suppression]:
    """The suppressions in force for many (channel, normalised address) pairs,
    in one query: {(channel, address): suppression}."""
    pairs = set(pairs)
    if not pairs:
        return {}
    found = Suppression.objects.filter(
        lifted_at__isnull=True, address__in={address for _, address in pairs}
    )
    return {(s.channel, s.address): s for s in found if (s.channel, s.address) in pairs}


def suppression_history(channel: str, address: str) -> QuerySet[Suppression]:
    return Suppression.objects.filter(
        channel=channel, address=normalize_address(channel, address)
    ).order_by("-created_at", "-id")


# --- consent -----------------------------------------------------------------


def _latest(records: Iterable[ConsentRecord]) -> dict[str, ConsentRecord]:
    """Latest record per topic ("" for the channel) from records ordered newest first."""
    latest: dict[str, ConsentRecord] = {}
    for record in records:
        latest.setdefault(record.topic, record)
    return latest


def _ledger(customer_id: int, channel: str, topics: Iterable[str] | None = None):
    qs = ConsentRecord.objects.filter(customer_id=customer_id, channel=channel)
    if topics is not None:
        qs = qs.filter(topic__in=list(topics))
    # recorded_at is when the customer acted; id breaks ties in ledger order.
    return qs.order_by("-recorded_at", "-id")


def consent_state(customer: Customer | int, channel: str, topic: str = "") -> bool | None:
    """The customer's current consent for a channel (or an email topic), read
    from the ledger: True granted, False revoked, None never said.

    The latest record for (customer, channel, topic) decides, except that a
    channel-wide revocation overrides every topic: "unsubscribe from all"
    holds until the channel itself is granted again. A topic without records
    of its own follows the channel."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    latest = _latest(_ledger(customer_id, channel, {"", topic}))
    return consent_from_latest({t: record.status for t, record in latest.items()}, topic)


def consent_from_latest(latest: Mapping[str, str], topic: str = "") -> bool | None:
    """`consent_state`'s rule applied to the latest status per topic of one
    customer's channel ("" is the channel itself)."""
    channel_status = latest.get("")
    if channel_status == ConsentRecord.Status.REVOKED:
        return False
    status = (latest.get(topic) if topic else None) or channel_status
    if status is None:
        return None
    return status == ConsentRecord.Status.GRANTED


def consent_latest_many(customer_ids: Iterable[int]) -> dict[tuple[int, str], dict[str, str]]:
    """{(customer id, channel): {topic: latest status}} for many customers in
    one query: what `consent_from_latest` decides from, for a batch of sends."""
    latest: dict[tuple[int, str], dict[str, str]] = {}
    rows = (
        ConsentRecord.objects.filter(customer_id__in=list(customer_ids))
        .order_by("-recorded_at", "-id")
        .values_list("customer_id", "channel", "topic", "status")
    )
    for customer_id, channel, topic, status in rows:
        latest.setdefault((customer_id, channel), {}).setdefault(topic, status)
    return latest


def consent_summary(customer: Customer | int) -> dict[tuple[str, str], bool | None]:
    """{(channel, topic): state} for every channel and every topic the
    customer has a record for ("" is the channel itself): what the
    preference centre shows."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    summary: dict[tuple[str, str], bool | None] = {}
    for channel in Channel.values:
        latest = _latest(_ledger(customer_id, channel))
        summary[(channel, "")] = consent_state(customer_id, channel)
        for topic in latest:
            if topic:
                summary[(channel, topic)] = consent_state(customer_id, channel, topic)
    return summary


def consent_history(customer: Customer | int) -> QuerySet[ConsentRecord]:
    """The customer's whole ledger, newest first."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    return ConsentRecord.objects.filter(customer_id=customer_id).order_by("-recorded_at", "-id")


# --- messages ----------------------------------------------------------------


def customer_messages(customer: Customer | int) -> QuerySet[Message]:
    """Every message to the customer, sent or not, newest first: with each
    refusal's reason, the record of why they did or did not hear from us."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    return Message.objects.filter(customer_id=customer_id).order_by("-created_at", "-id")


def pending_messages(
    *, channel: str, address: str | None = None, customer_id: int | None = None
) -> QuerySet[Message]:
    """Messages still waiting to go (queued or deferred) on a channel, to an
    address or to a customer."""
    qs = Message.objects.filter(
        channel=channel, status__in=(Message.Status.QUEUED, Message.Status.DEFERRED)
    )
    if address is not None:
        qs = qs.filter(to_address=address)
    if customer_id is not None:
        qs = qs.filter(customer_id=customer_id)
    return qs


# The statuses a frequency cap counts: gone, going, or maybe gone.
CAP_COUNTED = (
    Message.Status.QUEUED,
    Message.Status.DEFERRED,
    Message.Status.SENDING,
    Message.Status.SENT,
    Message.Status.DELIVERED,
    Message.Status.OPENED,
    Message.Status.CLICKED,
    Message.Status.BOUNCED,
    Message.Status.COMPLAINED,
    Message.Status.UNKNOWN,
)


def _send_time_rows(since: datetime, **filters):
    # The (customer, channel, created_at) index narrows to the customers'
    # recent messages; deferred ones created earlier may go later, hence the
    # generous lower bound on created_at.
    return Message.objects.filter(
        category="marketing",
        is_test=False,
        status__in=CAP_COUNTED,
        created_at__gte=since - DEFERRAL_LOOKBACK,
        **filters,
    )


def marketing_send_times(customer_id: int, channel: str, *, since: datetime) -> list[datetime]:
    """When the customer's marketing messages on `channel` went or will go,
    from `since` on, for frequency caps. Every journey counts (the cap is per
    customer, not per journey); test sends, refused and failed messages do
    not. A message's time is when it was sent, else when it may go (deferred
    or waiting for a retry), else when it was created."""
    rows = _send_time_rows(since, customer_id=customer_id, channel=channel).values_list(
        "sent_at", "send_after", "created_at"
    )
    return sorted(t for t in (a or b or c for a, b, c in rows) if t >= since)


def marketing_send_times_many(
    customer_ids: Iterable[int], *, since: datetime
) -> dict[tuple[int, str], list[datetime]]:
    """`marketing_send_times` for many customers and every channel in one
    query: {(customer id, channel): sorted times from `since` on}."""
    times: dict[tuple[int, str], list[datetime]] = {}
    rows = _send_time_rows(since, customer_id__in=list(customer_ids)).values_list(
        "customer_id", "channel", "sent_at", "send_after", "created_at"
    )
    for customer_id, channel, sent_at, send_after, created_at in rows:
        at = sent_at or send_after or created_at
        if at >= since:
            times.setdefault((customer_id, channel), []).append(at)
    for found in times.values():
        found.sort()
    return times
