"""Where a message's status may go next. Statuses only move forward: a late
or repeated provider event (a `delivered` after an `opened`, a retry's second
`sent`) never takes a message back, and a message that might have gone out
(`sending`, `unknown`) is never queued again except by the delivery service's
own retry of an error that proved the provider did not take it.

Every status change is a compare-and-set: `UPDATE … WHERE status IN
(statuses that may move to the new one)`, so two writers racing (a webhook
and a worker, two webhooks) cannot interleave into a step backwards.

This module is the one writer of a message's status once its row exists:
delivery (apps/messaging/delivery/: the claim, the sent records, a claimed
message settled, a waiting one suppressed at send time, leases expired),
consent's cancelling of waiting messages and tracking all change it here.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.db.models.functions import Concat

from apps.core.bulk import staged_write

from .models import Message

S = Message.Status
# Waiting to be sent: what a delivery may claim, and what may be cancelled.
PENDING = (S.QUEUED, S.DEFERRED)

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


def messages_cancel(messages: QuerySet, *, reason: str, now: datetime) -> int:
    """Move the waiting messages (queued or deferred) among `messages` to
    suppressed with `reason`. A message a worker has already claimed
    (`sending`) is not touched. Returns how many moved."""
    return messages.filter(status__in=PENDING).update(
        status=S.SUPPRESSED, reason=reason[:300], send_after=None, updated_at=now
    )


def message_suppress_waiting(message_id: int, *, reason: str, now: datetime) -> bool:
    """Suppress one waiting message, found by primary key only (delivery's
    send-time check of the suppression list: see `by_id_in`)."""
    moved = by_id_in([message_id], PENDING).update(
        status=S.SUPPRESSED, reason=reason[:300], updated_at=now
    )
    return moved == 1


def message_settle(message_id: int, new: str, *, now: datetime, **fields) -> bool:
    """Move a message a delivery worker claimed out of `sending` (to queued
    for a retry, failed or unknown), its lease cleared, writing `fields`
    with it. False when it is no longer `sending` (the sweeper marked it
    unknown meanwhile, or a provider's event moved it on)."""
    moved = by_id_in([message_id], [S.SENDING]).update(
        status=new, lease_until=None, updated_at=now, **fields
    )
    return moved == 1


def leases_expire(*, now: datetime, error: str) -> int:
    """`sending` messages whose lease ran out (their worker died mid-call)
    become `unknown` with `error`: the provider may have them, so they are
    never sent again by themselves. Returns how many."""
    return Message.objects.filter(status=S.SENDING, lease_until__lt=now).update(
        status=S.UNKNOWN, lease_until=None, error=error, updated_at=now
    )


def _column(name: str) -> str:
    return f'"{Message._meta.get_field(name).column}"'


# Delivery's two statements, which every message runs, written once: on this
# hot path the ORM's compiling of an update costs more than running it. The
# SQL is written from the model's own names; every value is a parameter.
_TABLE = f'"{Message._meta.db_table}"'
_STATUS = _column("status")
CLAIM_SQL = (
    f"UPDATE {_TABLE} SET {_STATUS} = %s, {_column('lease_until')} = %s, "  # noqa: S608
    f"{_column('attempts')} = {_column('attempts')} + 1, {_column('provider')} = %s, "
    f"{_column('updated_at')} = %s "
    # `|| ''`: a status test no index can serve (see by_id_in).
    f"WHERE {_column('id')} IN ({{ids}}) AND ({_STATUS} || '') IN (%s, %s) "
    f"AND ({_column('send_after')} IS NULL OR {_column('send_after')} <= %s) "
    f"RETURNING {_column('id')}"
)
# `sources` keeps the sent record forward-only.
_SENT_FROM = sorted(sources(S.SENT))
# A group's sent records in one statement ({rows}: one "(%s, %s, %s)" per
# message): each statement is parsed and planned on its own (Django binds
# parameters on the client), which cost a third of the rows' writing.
_SENT_ROWS = "WITH v(message_id, provider_id, at) AS (VALUES {rows})"
_SENT_UPDATE = (
    f"UPDATE {_TABLE} SET {_STATUS} = CASE WHEN {_STATUS} IN "  # noqa: S608
    f"({', '.join(['%s'] * len(_SENT_FROM))}) THEN %s ELSE {_STATUS} END, "
    f"{_column('provider_message_id')} = v.provider_id, {_column('sent_at')} = v.at, "
    f"{_column('lease_until')} = NULL, {_column('error')} = '', {_column('updated_at')} = v.at "
    f"FROM v WHERE {_column('id')} = v.message_id"
)
_SENT_SQL = f"{_SENT_ROWS} {_SENT_UPDATE}"
# A group's sent records and the next group's claims in one statement (the
# records a data-modifying WITH; the two touch different messages), which is
# a transaction of its own: one round trip instead of four (BEGIN, two
# statements, COMMIT), each of which cost the worker and the server about as
# much as a statement's work.
_SENT_THEN_CLAIM_SQL = f"{_SENT_ROWS}, sent AS ({_SENT_UPDATE}) {CLAIM_SQL}"

# A send to record: (message id, the provider's id for it, when).
SentRecord = tuple[int, str, datetime]


def messages_record_sent(sent: Sequence[SentRecord]) -> None:
    """Record sends, in one statement: the provider's id and `sent_at` are
    written whatever the status, and the status moves to `sent` only if it
    may (a provider's event may have overtaken the worker: a status callback
    before the response)."""
    if not sent:
        return
    connection = transaction.get_connection()
    rows, values = _sent_rows(sent, connection.ops.adapt_datetimefield_value)
    with connection.cursor() as cursor:
        cursor.execute(_SENT_SQL.format(rows=rows), values)


def _sent_rows(sent: Sequence[SentRecord], at) -> tuple[str, list]:
    """The VALUES rows of `_SENT_ROWS` and the parameters of the sent
    records (theirs, then `_SENT_UPDATE`'s)."""
    values = []
    for message_id, provider_message_id, when in sent:
        values += (message_id, provider_message_id[:200], at(when))
    return ", ".join(["(%s, %s, %s)"] * len(sent)), [*values, *_SENT_FROM, S.SENT]


def messages_claim(
    ids: Sequence[int],
    *,
    provider: str,
    lease_until: datetime,
    now: datetime,
    sent: Sequence[SentRecord] = (),
) -> set[int]:
    """Delivery's compare-and-set, one statement for a group: each due,
    waiting message among `ids` becomes `sending` for `provider` under a
    lease until `lease_until`, its attempt counted before the call. Returns
    the ids claimed. `sent`: the previous group's sends, recorded by the same
    statement (as `messages_record_sent`)."""
    connection = transaction.get_connection()
    at = connection.ops.adapt_datetimefield_value
    placeholders = ", ".join(["%s"] * len(ids))
    params = [S.SENDING, at(lease_until), provider, at(now), *ids, *PENDING, at(now)]
    if sent:
        rows, values = _sent_rows(sent, at)
        sql = _SENT_THEN_CLAIM_SQL.format(rows=rows, ids=placeholders)
        params = values + params
    else:
        sql = CLAIM_SQL.format(ids=placeholders)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk for (pk,) in cursor.fetchall()}


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
