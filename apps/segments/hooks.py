"""Who is told when segment memberships change: a plain registry of functions.

A listener is called once per segment and refresh (or static upload) that
changed something, with the ids of the customers who entered and exited, never
once per customer. The services call `notify` from `transaction.on_commit`, so
a listener only ever sees changes that were committed. The journeys app
registers its triggers here:

    @on_membership_change
    def start_journeys(*, segment, entered_ids, exited_ids, now): ...
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .models import Segment

logger = logging.getLogger(__name__)


class MembershipListener(Protocol):
    def __call__(
        self,
        *,
        segment: "Segment",
        entered_ids: Sequence[int],
        exited_ids: Sequence[int],
        now: datetime,
    ) -> None: ...


_listeners: list[MembershipListener] = []


def on_membership_change(fn: MembershipListener) -> MembershipListener:
    """Register `fn` (usable as a decorator); registering twice is a no-op."""
    if fn not in _listeners:
        _listeners.append(fn)
    return fn


def remove_listener(fn: MembershipListener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def notify(
    segment: "Segment", entered_ids: Sequence[int], exited_ids: Sequence[int], now: datetime
) -> None:
    """Call every listener once. The changes are already committed, so one
    listener's failure is logged and does not keep the others from hearing."""
    for listener in list(_listeners):
        try:
            listener(segment=segment, entered_ids=entered_ids, exited_ids=exited_ids, now=now)
        except Exception:
            logger.exception(
                "membership listener %s failed for segment %s (%d entered, %d exited)",
                getattr(listener, "__qualname__", listener),
                segment.slug,
                len(entered_ids),
                len(exited_ids),
            )
