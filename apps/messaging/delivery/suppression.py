"""The suppression list checked again at send time: an address may have
bounced, complained or unsubscribed since its message was written (a
deferral, a retry)."""

from datetime import datetime

from ..consent import BLOCKS_TRANSACTIONAL, SUPPRESSION_WORDS
from ..models import Category, Channel, Message, Suppression
from ..selectors import normalize_address
from ..transitions import message_suppress_waiting


def drop_suppressed(messages: list[Message], *, now: datetime) -> tuple[list[Message], int]:
    """Re-check the suppression list at send time (one query per batch): an
    address may have bounced, complained or unsubscribed since the message
    was written (a deferral, a retry). An unsubscribe stops marketing only
    (consent.BLOCKS_TRANSACTIONAL). Returns the messages to send and how
    many were suppressed instead."""
    if not messages:
        return messages, 0
    forms = {m.pk: _address_forms(m.channel, m.to_address) for m in messages}
    found: dict[tuple[str, str], str] = {}
    for channel, address, reason in Suppression.objects.filter(
        lifted_at__isnull=True, address__in={a for each in forms.values() for a in each}
    ).values_list("channel", "address", "reason"):
        found[(channel, address)] = reason
    if not found:
        return messages, 0
    keep, suppressed = [], 0
    for message in messages:
        reason = None
        if any((message.channel, form) in found for form in forms[message.pk]):
            reason = found.get(_address(message.channel, message.to_address))
        if reason is None or (
            reason not in BLOCKS_TRANSACTIONAL and message.category != Category.MARKETING
        ):
            keep.append(message)
            continue
        message_suppress_waiting(
            message.pk, reason=f"suppressed: {SUPPRESSION_WORDS[reason]}", now=now
        )
        suppressed += 1
    return keep, suppressed


def _address_forms(channel: str, address: str) -> tuple[str, ...]:
    """The forms among which `_address` is: for email the address stripped
    and lower-cased (what it is when valid) and the address as it is (when
    not), so that the regular expressions of validation, the costliest part
    of the check, run only for the few addresses the list holds."""
    if channel == Channel.EMAIL:
        return address, address.strip().lower()
    return (_address(channel, address)[1],)


def _address(channel: str, address: str) -> tuple[str, str]:
    try:
        return channel, normalize_address(channel, address)
    except ValueError:
        return channel, address
