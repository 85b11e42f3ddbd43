"""Where a message's status may go next. Statuses only move forward: a late
or repeated provider event (a `delivered` after an `opened`, a retry's second
`sent`) never takes a message back, and a message that might have gone out
(`sending`, `unknown`) is never queued again except by the delivery service's
own retry of an error that proved the provider did not take it.

Every status change is a compare-and-set: `UPDATE … WHERE status IN
(statuses that may move to the new one)`, so two writers racing (a webhook
and a worker, two webhooks) cannot interleave into a step backwards.
Delivery (apps/messaging/delivery.py) and tracking both use this.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Case, F, QuerySet, Value, When
from django.db.models.functions import Concat

from apps.core.bulk import staged_write

from .models import Message

S = Message.Status

_ENGAGEMENT = {S.DELIVERED, S.OPENED, S.CLICKED, S.BOUNCED, S.COMPLAINED}

NEXT: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.DEFERRED, S.SENDING, S.SUPPRESSED, S.FAILED}),
    S.DEFERRED: frozenset({S.QUEUED, S.SENDING, S.SUPPRESSED, S.FAILED}),
    # QUEUED: the retry of a transient error. A provider's event may overtake
    # the worker recording the send (a status callback racing the response).
    S.SENDING: frozenset({S.QUEUED, S.SENT, S.FAILED, S.UNKNOWN, *_ENGAGEMENT}),
    # Unknown: a worker died mid-call; the provider's events settle it.
    S.UNKNOWN: frozenset({S.SENT, S.FAILED, *_ENGAGEMENT}),
    # FAILED after SENT: the carrier or the mailbox provider refused it later
    # (Twilio "undelivered"/"failed", SendGrid "dropped").
    S.SENT: frozenset({S.FAILED, *_ENGAGEMENT}),
    S.DELIVERED: frozenset({S.OPENED, S.CLICKED, S.BOUNCED, S.COMPLAINED}),
    S.OPENED: frozenset({S.CLICKED, S.COMPLAINED}),
    S.CLICKED: frozenset({S.COMPLAINED}),
    S.BOUNCED: frozenset({S.COMPLAINED}),
    S.COMPLAINED: frozenset(),
    S.FAILED: frozenset(),
    S.SUPPRESSED: frozenset(),
}

_SOURCES: dict[str, frozenset[str]] = {
    new: frozenset(old for old, targets in NEXT.items() if new in targets) for new in S.values
}


def can_move(current: str, new: str) -> bool:
    """Whether a message in `current` may move to `new` (staying put is not a move)."""
    return new in NEXT[current]


def sources(new: str) -> frozenset[str]:
    """The statuses a message may be in to move to `new`."""
    return _SOURCES[new]


def by_id_in(ids: Iterable[int], statuses: Iterable[str]) -> QuerySet:
    """The messages among `ids` whose status is one of `statuses`, found by
    primary key. The status is tested on an expression no index serves: the
    pending index (message_pending) serves any test of a waiting status, and
    with statistics taken when nothing was waiting (the usual state between
    bursts) PostgreSQL reckons it holds a row or two and walks it whole
    instead of the primary key (with a few thousand messages waiting, 15 ms
    instead of 0.2 for one message)."""
    return Message.objects.alias(status_unindexed=Concat("status", Value(""))).filter(
        pk__in=list(ids), status_unindexed__in=list(statuses)
    )


def message_move(message_id: int, new: str, *, now: datetime, **fields) -> bool:
    """Move one message to `new`, writing `fields` with it, if its status
    allows; True when it moved. Nothing is written when it does not."""
    moved = by_id_in([message_id], sources(new)).update(status=new, updated_at=now, **fields)
    return moved == 1


def status_if_allowed(new: str) -> Case:
    """An expression for `update(status=...)` that moves to `new` where
    allowed and leaves the status as it is elsewhere: for writes that must
    happen either way (recording a provider's id) without a step back."""
    return Case(When(status__in=sources(new), then=Value(new)), default=F("status"))


# --- many messages at once: tracking's batch processor -------------------------


def _reachable(start: str) -> frozenset[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for new in NEXT[todo.pop()]:
            if new not in seen:
                seen.add(new)
                todo.append(new)
    return frozenset(seen)


# Where a message may end up from each status, in any number of moves.
_REACHABLE: dict[str, frozenset[str]] = {status: _reachable(status) for status in NEXT}


@dataclass(slots=True)
class Advance:
    """One message's change in a batch: from `old` (its status as read under
    its row lock) to `new`, reached from `old` through moves `can_move`
    allows (`old` itself when only timestamps are filled); the timestamps of
    the states reached and the error of a failure (None: none reached)."""

    id: int
    old: str
    new: str
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    failed_at: datetime | None = None
    error: str | None = None


_ADVANCE_COLUMNS = (
    ("id", "bigint"),
    ("old", "text"),
    ("new", "text"),
    ("delivered_at", "timestamptz"),
    ("opened_at", "timestamptz"),
    ("clicked_at", "timestamptz"),
    ("failed_at", "timestamptz"),
    ("error", "text"),
    ("updated_at", "timestamptz"),
)
_ADVANCE_UPDATE = (
    # The status is set only if it is still what the move started from
    # (compare-and-set); the timestamps are filled once, whatever it is.
    f"UPDATE {Message._meta.db_table} AS m SET "  # noqa: S608
    "status = CASE WHEN m.status = s.old THEN s.new ELSE m.status END, "
    "delivered_at = COALESCE(m.delivered_at, s.delivered_at), "
    "opened_at = COALESCE(m.opened_at, s.opened_at), "
    "clicked_at = COALESCE(m.clicked_at, s.clicked_at), "
    "failed_at = COALESCE(m.failed_at, s.failed_at), "
    "error = CASE WHEN m.error = '' AND m.status = s.old THEN s.error ELSE m.error END, "
    "updated_at = s.updated_at "
    "FROM {staged} AS s WHERE m.id = s.id"
)


def messages_advance(advances: Sequence[Advance], *, now: datetime) -> None:
    """Write many messages' changes in one statement (rows staged by COPY, in
    id order: concurrent writers lock them in one order). Each status becomes
    `new` only where it is still `old` (compare-and-set: a writer that moved
    the message meanwhile wins, and this move is dropped rather than applied
    on top of it), and with it the error, if the message has none; each
    timestamp is filled only if the message has none yet, whatever its
    status. A move `old` cannot reach is refused (ValueError) before anything
    is written."""
    refused = [a for a in advances if a.new != a.old and a.new not in _REACHABLE[a.old]]
    if refused:
        first = refused[0]
        raise ValueError(f"message {first.id}: no move from {first.old} to {first.new}")
    if not advances:
        return
    rows = [
        (a.id, a.old, a.new, a.delivered_at, a.opened_at, a.clicked_at, a.failed_at,
         a.error or "", now)
        for a in sorted(advances, key=lambda a: a.id)
    ]  # fmt: skip
    staged_write("message_advance", _ADVANCE_COLUMNS, rows, _ADVANCE_UPDATE)
