"""Delivery: from a queued `Message` row to one provider call, exactly once.

The row is the source of truth; the broker only carries ids.

- `delivery_enqueue(ids)` publishes delivery tasks when the caller's
  transaction commits (nothing on rollback), one task per chunk of
  DELIVERY_BATCH_SIZE ids, however many sends the transaction made.
  `published_at` says a task was published (or, for the messages
  `message_send_many` writes, that one is at its commit: it writes them
  stamped, sparing an UPDATE of every message, and a publication the broker
  refuses takes the stamp off again).
- `messages_deliver(ids, now=...)`, what the task runs, takes each due message
  by a compare-and-set (`queued`/`deferred` → `sending` with a lease, the
  attempt counted before the call), calls its provider once, and records the
  answer. Calls go DELIVERY_CONCURRENCY at a time: a group is claimed in one
  commit, called at once (the calls wait on the network, not on the CPU:
  by the provider's `send_many` when it can have them in flight from one
  thread, as SendGrid's can, else from a thread pool), and its answers are
  written in the commit that claims the next group, so a message costs a
  fraction of a commit and no call is ever made on an uncommitted claim.
  The answers: `sent` with the provider's id; a transient error (an HTTP
  error answer, or a failure before the request could reach the provider)
  puts it back to `queued` with `send_after` (exponential backoff with
  jitter, or the wait the provider asked for) until DELIVERY_MAX_ATTEMPTS,
  then `failed`; a permanent error fails it at once, with what the error
  says about the address (suppression, consent) written in the same
  transaction; a call that may have reached the provider without an answer
  coming back (a read timeout, a connection lost after the request was
  written) or an unexpected error makes it `unknown`, never sent again by
  itself. A second run of the same task finds nothing to claim, so it
  calls no provider.
- `messages_sweep(now=...)`, on beat every few seconds: a `sending` message
  whose lease ran out (its worker died mid-call) becomes `unknown`, for
  review, and is never re-sent, since the provider may have taken it; due
  messages never published (retries, deferrals, a broker outage) or
  published long ago and still waiting (a task lost with the broker, or a
  send's process that died between its commit and its publication) are
  published; and when the broker lost its data since the last sweep (a
  Redis restarted without persistence: `apps.core.broker`), every message
  still waiting is published again at once, not DELIVERY_REPUBLISH_AFTER_S
  later.

Waits are rows with `send_after`, never Celery countdowns.
"""

import logging
import os
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.broker import broker_lost_data

from . import ratelimit
from .consent import BLOCKS_TRANSACTIONAL, SUPPRESSION_WORDS, consent_record, suppression_add
from .models import Category, Channel, ConsentRecord, Message, Suppression
from .providers import OutcomeUnknownError, PermanentError, Provider, TransientError, get_provider
from .selectors import normalize_address
from .transitions import by_id_in, sources

logger = logging.getLogger(__name__)

S = Message.Status
PENDING = (S.QUEUED, S.DEFERRED)
# ± this share of the backoff, so messages failing together do not retry together.
JITTER = 0.25
# A worker waits this long at most for its rate limit's next token; a longer
# wait hands the messages back (queued, send_after) instead of holding a worker.
MAX_RATE_WAIT_S = 1.0
# Of the task's soft time limit, the share a batch may use before it hands
# its remaining messages back to the sweeper (so a storm of timeouts never
# gets a batch killed mid-call).
BATCH_BUDGET_SHARE = 0.5
# How many messages one sweep publishes at most (the rest: the next sweep).
SWEEP_PUBLISH_LIMIT_BATCHES = 100
# The sweeper's name for the broker's epoch (apps.core.broker).
BROKER_EPOCH_NAME = "delivery"
LEASE_EXPIRED = (
    "the worker sending it stopped before recording the provider's answer (lease expired): "
    "it may or may not have been sent"
)


# BY_ID_ONLY: the statements that take messages by id find them by primary
# key and never give PostgreSQL an indexable status test (see
# transitions.by_id_in): with a few thousand messages waiting, each claim of
# 8 rows read them all through the pending index (15 ms instead of 0.1 ms).


def _due(now: datetime) -> Q:
    return Q(send_after__isnull=True) | Q(send_after__lte=now)


def chunked(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


# --- publishing ---------------------------------------------------------------------

_PENDING_ATTR = "_tenure_delivery_pending"


def delivery_enqueue(
    message_ids: Iterable[int], *, now: datetime | None = None, stamped: bool = False
) -> None:
    """Publish delivery for these messages once the current transaction
    commits; nothing is published if it rolls back. Every call in one
    transaction joins one publication, chunked into tasks of
    DELIVERY_BATCH_SIZE ids, so a tick that sends a thousand messages
    publishes ten tasks, not a thousand.

    At publication only messages still queued (or deferred and due) and never
    published go out, which also drops ids whose rows a rolled-back savepoint
    took away. `stamped`: the caller wrote these rows in this transaction with
    `published_at` already set, for this publication; they go out without
    the stamp's UPDATE (and lose the stamp if the broker refuses them).
    Outside a transaction it publishes at once."""
    ids = [(int(pk), stamped) for pk in message_ids]
    if not ids:
        return
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        _publish_new(ids, now=now)
        return
    pending = getattr(conn, _PENDING_ATTR, None)
    if pending is None or not conn.run_on_commit:
        # No commit hook of this transaction is waiting: whatever was collected
        # belonged to a transaction that rolled back.
        pending = []
        setattr(conn, _PENDING_ATTR, pending)
    pending.extend(ids)
    # One hook per call: hooks made inside a savepoint that rolls back are
    # dropped by Django, so registering each time keeps one alive. The first
    # to run publishes everything; the rest find nothing left.
    transaction.on_commit(partial(_flush, conn, now))


def _flush(conn, now: datetime | None) -> None:
    ids = getattr(conn, _PENDING_ATTR, None)
    setattr(conn, _PENDING_ATTR, None)
    if not ids:
        return
    try:
        _publish_new(ids, now=now)
    except Exception:
        # The sends are committed; failing the caller now would only mislead
        # it. What was not published has no `published_at`: the sweeper's.
        logger.exception("delivery: publishing %d message(s) failed; the sweeper will", len(ids))


def _publish_new(ids: Sequence[tuple[int, bool]], *, now: datetime | None) -> None:
    """Publish the (id, stamped) among `ids` still waiting, due, and not
    published (unless stamped for this publication)."""
    now = now or timezone.now()
    stamped = {pk for pk, was_stamped in ids if was_stamped}
    fresh: dict[bool, list[int]] = {False: [], True: []}
    for chunk in chunked(sorted({pk for pk, _ in ids}), 1000):
        # By primary key only, the rest tested here (see BY_ID_ONLY).
        for pk, status, published_at, send_after in Message.objects.filter(
            pk__in=chunk
        ).values_list("pk", "status", "published_at", "send_after"):
            if status not in PENDING or (send_after is not None and send_after > now):
                continue
            if pk in stamped and published_at is not None:
                fresh[True].append(pk)
            elif published_at is None:
                fresh[False].append(pk)
    publish(fresh[False], now=now)
    publish(fresh[True], now=now, stamped=True)


def publish(ids: Sequence[int], *, now: datetime, stamped: bool = False) -> int:
    """Publish one delivery task per chunk of ids and stamp `published_at`
    (unless the rows were `stamped` already); returns how many ids went out.
    A broker error stops here and is logged: the rows not stamped (or no
    longer) are the sweeper's to publish when it is back."""
    from .tasks import deliver_messages  # the task module imports this one

    done = 0
    for chunk in chunked(ids, settings.DELIVERY_BATCH_SIZE):
        try:
            deliver_messages.delay(chunk)
        except Exception:
            logger.exception(
                "delivery: publishing %d message(s) failed; the sweeper retries", len(chunk)
            )
            if stamped:
                # The stamp said a task was on its way; none is.
                Message.objects.filter(pk__in=ids[done:]).update(published_at=None)
            break
        # Stamped after publishing: a crash in between republishes (harmless,
        # the claim is a compare-and-set), never loses the message. The
        # stamp means nothing on a message no longer waiting, so it goes by
        # primary key only (see BY_ID_ONLY).
        if not stamped:
            _stamp_published(Message.objects.filter(pk__in=chunk), now)
        done += len(chunk)
    return done


def _stamp_published(messages, value: datetime | None) -> int:
    """Set `published_at` on these messages, but for rows another transaction
    holds (a worker claiming them or recording their sends), which are
    skipped instead of waited for: at 2,000 messages the sweeper's stamp and
    a worker's sent-and-claim statement, each holding rows the other wanted,
    deadlocked (tests/chaos), and PostgreSQL aborted one of them, sometimes
    the worker's. A row skipped here is at worst published again later, and
    claimed once."""
    with transaction.atomic():
        holdable = messages.select_for_update(skip_locked=True).values("pk")
        return Message.objects.filter(pk__in=holdable).update(published_at=value)


# --- delivering ---------------------------------------------------------------------


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0  # transient error: queued again with send_after
    failed: int = 0
    unknown: int = 0  # no answer after the request (or an unexpected error): maybe sent
    suppressed: int = 0  # on the suppression list by the time it was due
    not_due: int = 0  # send_after still ahead: left to the sweeper
    skipped: int = 0  # not pending (already sent, being sent, cancelled) or gone
    handed_back: int = 0  # batch budget or rate limit: left to the sweeper


def messages_deliver(message_ids: Sequence[int], *, now: datetime) -> DeliveryReport:
    """Deliver each due message among `message_ids` (see the module's
    docstring). `now` is when the batch started; each message's own time is
    `now` plus the time the batch has taken so far."""
    report = DeliveryReport()
    started = time.monotonic()
    budget = settings.CELERY_TASK_SOFT_TIME_LIMIT * BATCH_BUDGET_SHARE

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    def out_of_time() -> bool:
        return time.monotonic() - started > budget

    ids = sorted({int(pk) for pk in message_ids})
    # By primary key only, the status tested here (see BY_ID_ONLY).
    rows = [m for m in Message.objects.filter(pk__in=ids).order_by("pk") if m.status in PENDING]
    report.skipped = len(ids) - len(rows)
    due = [m for m in rows if m.send_after is None or m.send_after <= now]
    if not_due := [m.pk for m in rows if m.send_after is not None and m.send_after > now]:
        # Published early (or the clock moved): the sweeper publishes it when due.
        by_id_in(not_due, PENDING).update(published_at=None)
        report.not_due = len(not_due)
    due = _drop_suppressed(due, now=now, report=report)

    by_channel: dict[str, list[Message]] = defaultdict(list)
    for message in due:
        by_channel[message.channel].append(message)
    for channel, messages in by_channel.items():
        try:
            provider = get_provider(channel)
        except ImproperlyConfigured as exc:
            # Nothing is claimed: the messages wait, queued, until the
            # configuration is fixed (the sweeper republishes them).
            logger.error("delivery: %s messages not sent: %s", channel, exc)
            report.handed_back += len(messages)
            continue
        _deliver_all(provider, messages, report=report, clock=clock, out_of_time=out_of_time)
    return report


def _deliver_all(
    provider: Provider,
    messages: list[Message],
    *,
    report: DeliveryReport,
    clock: Callable[[], datetime],
    out_of_time: Callable[[], bool],
) -> None:
    """One provider's messages of a batch, as fast as its rate limit allows,
    DELIVERY_CONCURRENCY calls at a time.

    Each group's claims are committed before its calls, and its results
    before the next group's calls; but a group's results and the next
    group's claims share one transaction, so a group costs one commit (one
    WAL flush, and one statement: `_write_and_claim`).
    A worker killed mid-group leaves only that group's messages `sending`,
    each with its call in flight: the sweeper marks them `unknown`, never
    re-sent."""
    queue = deque(messages)
    width = max(1, settings.DELIVERY_CONCURRENCY)
    unwritten: list[Callable[[], object]] = []  # the last group's results

    def write_pending() -> None:
        if unwritten:
            writes = unwritten.copy()
            unwritten.clear()
            _write_and_claim(writes, [], provider, now=clock())

    try:
        while queue:
            if out_of_time():
                write_pending()
                _hand_back([m.pk for m in queue], until=None)
                report.handed_back += len(queue)
                return
            want = min(width, len(queue))
            grant = ratelimit.take(provider.name, rate=provider.rate_per_second, want=want)
            if not grant.granted:
                write_pending()
                if grant.wait <= MAX_RATE_WAIT_S:
                    time.sleep(grant.wait)
                    continue
                _hand_back([m.pk for m in queue], until=clock() + timedelta(seconds=grant.wait))
                report.handed_back += len(queue)
                return
            group = [queue.popleft() for _ in range(min(grant.granted, want))]
            writes = unwritten.copy()
            unwritten.clear()
            claimed = _write_and_claim(writes, group, provider, now=clock())
            report.skipped += len(group) - len(claimed)
            for outcome, write in _call_all(claimed, provider, clock=clock):
                setattr(report, outcome, getattr(report, outcome) + 1)
                unwritten.append(write)
    except BaseException:
        # Keep what is known; the original error is the one to raise.
        try:
            write_pending()
        except Exception:
            logger.exception("delivery: recording a result failed while stopping")
        raise
    write_pending()


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _call_all(
    messages: list[Message], provider: Provider, *, clock: Callable[[], datetime]
) -> list[tuple[str, Callable[[], object]]]:
    """`_call` for each claimed message, at once: by the provider's
    `send_many` when it has one, else one thread per call from a pool kept
    per process (made after a prefork worker forks)."""
    if len(messages) <= 1:
        return [_call(m, provider, clock=clock) for m in messages]
    try:
        answers = provider.send_many(messages)
    except Exception as exc:
        # A bug, not an answer: any of them may have gone (see `_outcome`).
        answers = [exc] * len(messages)
    if answers is not None:
        return [
            _outcome(m, answer, provider, clock=clock)
            for m, answer in zip(messages, answers, strict=True)
        ]
    key = (os.getpid(), settings.DELIVERY_CONCURRENCY)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = ThreadPoolExecutor(
            max_workers=max(1, settings.DELIVERY_CONCURRENCY), thread_name_prefix="delivery"
        )
    return list(pool.map(partial(_call, provider=provider, clock=clock), messages))


def message_deliver(message: Message, provider: Provider, *, now: datetime) -> str:
    """Claim, send and record one message. Returns the outcome, a
    DeliveryReport field name: sent, retrying, failed, unknown or skipped."""
    if not _claim([message], provider, now=now):
        return "skipped"  # another worker has it, or it was sent or cancelled meanwhile
    outcome, write = _call(message, provider, clock=lambda: now)
    with transaction.atomic():
        write()
    return outcome


def _column(name: str) -> str:
    return f'"{Message._meta.get_field(name).column}"'


# The two statements every message runs, written once: on this hot path the
# ORM's compiling of an update costs more than running it. The SQL is
# written from the model's own names; every value is a parameter. `sources`
# keeps the sent record forward-only.
_TABLE = f'"{Message._meta.db_table}"'
_STATUS = _column("status")
_CLAIM_SQL = (
    f"UPDATE {_TABLE} SET {_STATUS} = %s, {_column('lease_until')} = %s, "  # noqa: S608
    f"{_column('attempts')} = {_column('attempts')} + 1, {_column('provider')} = %s, "
    f"{_column('updated_at')} = %s "
    # `|| ''`: a status test no index can serve (see BY_ID_ONLY).
    f"WHERE {_column('id')} IN ({{ids}}) AND ({_STATUS} || '') IN (%s, %s) "
    f"AND ({_column('send_after')} IS NULL OR {_column('send_after')} <= %s) "
    f"RETURNING {_column('id')}"
)
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
# A group's sent records and the next group's claims in one
# statement (the records a data-modifying WITH; the two touch different
# messages), which is a transaction of its own: one round trip instead of
# four (BEGIN, two statements, COMMIT), each of which cost the worker and
# the server about as much as a statement's work.
_SENT_THEN_CLAIM_SQL = f"{_SENT_ROWS}, sent AS ({_SENT_UPDATE}) {_CLAIM_SQL}"


def _write_and_claim(
    writes: Sequence[Callable[[], object]],
    messages: Sequence[Message],
    provider: Provider,
    *,
    now: datetime,
) -> list[Message]:
    """A group's results and the next group's claims (either may be empty),
    in one transaction; returns the messages claimed (see `_claim`). When
    the results are all sends, the sends and the claims are one statement
    (its own transaction, in autocommit)."""
    sent = [write for write in writes if isinstance(write, _Sent)]
    if len(sent) == len(writes):
        if not messages:
            _record_sent(sent)
            return []
        return _claim(messages, provider, now=now, sent=sent)
    with transaction.atomic():
        _write_results(writes)
        return _claim(messages, provider, now=now)


def _claim(
    messages: Sequence[Message], provider: Provider, *, now: datetime, sent: Sequence["_Sent"] = ()
) -> list[Message]:
    """The compare-and-set, one statement for a group: each due, waiting
    message becomes `sending` under a lease, its attempt counted before the
    call. Returns those claimed; the others are no longer waiting (another
    worker has them, or they were sent or cancelled meanwhile). `sent`: the
    previous group's sent records, written by the same statement."""
    if not messages:
        return []
    lease_until = now + timedelta(seconds=settings.DELIVERY_LEASE_S)
    connection = transaction.get_connection()
    at = connection.ops.adapt_datetimefield_value
    ids = ", ".join(["%s"] * len(messages))
    params = (
        [S.SENDING, at(lease_until), provider.name, at(now)]
        + [m.pk for m in messages]
        + [*PENDING, at(now)]
    )
    if sent:
        rows, values = _sent_rows(sent, at)
        sql = _SENT_THEN_CLAIM_SQL.format(rows=rows, ids=ids)
        params = values + params
    else:
        sql = _CLAIM_SQL.format(ids=ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        won = {pk for (pk,) in cursor.fetchall()}
    _mark_sent(sent)
    claimed = [m for m in messages if m.pk in won]
    for message in claimed:
        message.attempts += 1
        message.status, message.provider = S.SENDING, provider.name
        message.lease_until = lease_until
    return claimed


def _call(
    message: Message, provider: Provider, *, clock: Callable[[], datetime]
) -> tuple[str, Callable[[], object]]:
    """The one provider call for a claimed message: its outcome (a
    DeliveryReport field name) and the write that records it, to be run in a
    transaction."""
    try:
        answer: str | Exception = provider.send(message)
    except Exception as exc:
        answer = exc
    return _outcome(message, answer, provider, clock=clock)


def _outcome(
    message: Message,
    answer: str | Exception,
    provider: Provider,
    *,
    clock: Callable[[], datetime],
) -> tuple[str, Callable[[], object]]:
    """What a provider's answer to a call means: the provider's id (sent) or
    the error the call raised."""
    if isinstance(answer, TransientError):
        now = clock()
        if message.attempts >= settings.DELIVERY_MAX_ATTEMPTS:
            error = f"{answer} (gave up after {message.attempts} attempts)"
            return "failed", partial(
                _settle, message, S.FAILED, now=now, error=error, failed_at=now
            )
        if answer.retry_after is not None:
            # The provider said when; a little spread so a whole batch does
            # not come back in the same instant.
            spread = min(5.0, 0.1 * answer.retry_after + 0.5)
            wait = answer.retry_after + random.uniform(0, spread)
        else:
            wait = backoff(message.attempts)
        return "retrying", partial(
            _settle,
            message,
            S.QUEUED,
            now=now,
            error=str(answer),
            send_after=now + timedelta(seconds=wait),
            published_at=None,  # the sweeper publishes it when it is due
        )
    if isinstance(answer, PermanentError):
        return "failed", partial(_fail, message, answer, now=clock())
    if isinstance(answer, OutcomeUnknownError):
        # The request may have reached the provider: sending it again could
        # send it twice. Known and described, so no traceback.
        logger.warning("delivery: message %s: outcome unknown: %s", message.pk, answer)
        return "unknown", partial(_settle, message, S.UNKNOWN, now=clock(), error=str(answer))
    if isinstance(answer, Exception):
        # A bug or an interruption mid-call: the provider may have the
        # message. Never guess: `unknown` is for a person to review.
        logger.error("delivery: message %s: unexpected error", message.pk, exc_info=answer)
        error = f"{provider.name}: {type(answer).__name__}: {answer}"
        return "unknown", partial(_settle, message, S.UNKNOWN, now=clock(), error=error)
    return "sent", _Sent(message, answer, clock())


@dataclass(frozen=True)
class _Sent:
    """The write recording a successful call; a group's are written together."""

    message: Message
    provider_message_id: str
    now: datetime

    def __call__(self) -> None:
        _record_sent([self])


def _write_results(writes: Sequence[Callable[[], object]]) -> None:
    """A group's results, in the caller's transaction: the sent ones in one
    statement, the others (retries, failures) one by one."""
    _record_sent([write for write in writes if isinstance(write, _Sent)])
    for write in writes:
        if not isinstance(write, _Sent):
            write()


def _record_sent(sent: Sequence[_Sent]) -> None:
    """Recorded even if a provider event overtook us (a status callback
    before the response): the status moves only if it may (to `sent` from
    `sending` or `unknown`), the provider's id is kept either way."""
    if not sent:
        return
    connection = transaction.get_connection()
    rows, values = _sent_rows(sent, connection.ops.adapt_datetimefield_value)
    with connection.cursor() as cursor:
        cursor.execute(_SENT_SQL.format(rows=rows), values)
    _mark_sent(sent)


def _sent_rows(sent: Sequence[_Sent], at: Callable) -> tuple[str, list]:
    """The VALUES rows of `_SENT_ROWS` and the parameters of the sent
    records (theirs, then `_SENT_UPDATE`'s)."""
    values = []
    for one in sent:
        values += (one.message.pk, one.provider_message_id[:200], at(one.now))
    return ", ".join(["(%s, %s, %s)"] * len(sent)), [*values, *_SENT_FROM, S.SENT]


def _mark_sent(sent: Sequence[_Sent]) -> None:
    for one in sent:
        one.message.status, one.message.sent_at = S.SENT, one.now
        one.message.provider_message_id = one.provider_message_id


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts`: min(cap, base * 2**attempts), ±JITTER."""
    base = min(settings.DELIVERY_BACKOFF_CAP_S, settings.DELIVERY_BACKOFF_BASE_S * 2**attempts)
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def _fail(message: Message, exc: PermanentError, *, now: datetime) -> None:
    """Fail the message and record what the error says about its address, in
    one transaction: an invalid number is suppressed, an SMS STOP both
    suppresses the number and revokes consent in the ledger."""
    with transaction.atomic():
        if not _settle(message, S.FAILED, now=now, error=str(exc), failed_at=now):
            return
        if exc.suppress:
            try:
                suppression_add(
                    channel=message.channel,
                    address=message.to_address,
                    reason=exc.suppress,
                    source=f"{message.provider} error {exc.code}",
                    now=now,
                    detail=str(exc),
                )
            except ValueError as problem:
                # Not even an address we can store (the provider agrees): the
                # failure itself is the record.
                logger.warning("delivery: message %s: not suppressed: %s", message.pk, problem)
        if exc.revoke_consent:
            consent_record(
                customer=message.customer_id,
                channel=message.channel,
                status=ConsentRecord.Status.REVOKED,
                source=ConsentRecord.Source.PROVIDER,
                recorded_at=now,
                wording=str(exc),
            )


def _settle(message: Message, status: str, *, now: datetime, **fields) -> bool:
    """Move a message this worker claimed out of `sending`. False when it is
    no longer ours (the sweeper already marked it unknown)."""
    moved = by_id_in([message.pk], [S.SENDING]).update(
        status=status, lease_until=None, updated_at=now, **fields
    )
    if moved:
        message.status = status
        for name, value in fields.items():
            setattr(message, name, value)
    return moved == 1


def _hand_back(ids: Sequence[int], *, until: datetime | None) -> None:
    """Unclaimed messages this batch will not get to: the sweeper publishes
    them again (when `until` has passed, if given)."""
    fields = {"published_at": None}
    if until is not None:
        fields["send_after"] = until
    by_id_in(ids, PENDING).update(**fields)


def _drop_suppressed(
    messages: list[Message], *, now: datetime, report: DeliveryReport
) -> list[Message]:
    """Re-check the suppression list at send time (one query per batch): an
    address may have bounced, complained or unsubscribed since the message
    was written (a deferral, a retry). An unsubscribe stops marketing only
    (consent.BLOCKS_TRANSACTIONAL)."""
    if not messages:
        return messages
    forms = {m.pk: _address_forms(m.channel, m.to_address) for m in messages}
    found: dict[tuple[str, str], str] = {}
    for channel, address, reason in Suppression.objects.filter(
        lifted_at__isnull=True, address__in={a for each in forms.values() for a in each}
    ).values_list("channel", "address", "reason"):
        found[(channel, address)] = reason
    if not found:
        return messages
    keep = []
    for message in messages:
        reason = None
        if any((message.channel, form) in found for form in forms[message.pk]):
            reason = found.get(_address(message.channel, message.to_address))
        if reason is None or (
            reason not in BLOCKS_TRANSACTIONAL and message.category != Category.MARKETING
        ):
            keep.append(message)
            continue
        by_id_in([message.pk], PENDING).update(
            status=S.SUPPRESSED, reason=f"suppressed: {SUPPRESSION_WORDS[reason]}", updated_at=now
        )
        report.suppressed += 1
    return keep


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


# --- sweeping -----------------------------------------------------------------------


@dataclass
class SweepReport:
    expired: int = 0  # sending past its lease → unknown
    published: int = 0


def messages_sweep(*, now: datetime) -> SweepReport:
    """Expire stale leases and publish what is due and unpublished (see the
    module's docstring). Overlapping sweeps are harmless: a message published
    twice is claimed once."""
    expired = Message.objects.filter(status=S.SENDING, lease_until__lt=now).update(
        status=S.UNKNOWN, lease_until=None, error=LEASE_EXPIRED, updated_at=now
    )
    if expired:
        logger.warning("delivery: %d message(s) past their lease marked unknown", expired)

    if broker_lost_data(BROKER_EPOCH_NAME, now=now):
        # Every task published before the loss went with it: the messages
        # still waiting are unpublished now, and go out at once instead of
        # after DELIVERY_REPUBLISH_AFTER_S (within the limit below per sweep;
        # the next sweeps take the rest, as for any unpublished message).
        waiting = Message.objects.filter(status__in=PENDING, published_at__isnull=False)
        if lost := _stamp_published(waiting, None):
            logger.warning("delivery: the broker lost its data; republishing %d message(s)", lost)
    stale = now - timedelta(seconds=settings.DELIVERY_REPUBLISH_AFTER_S)
    limit = settings.DELIVERY_BATCH_SIZE * SWEEP_PUBLISH_LIMIT_BATCHES
    ids = list(
        Message.objects.filter(status__in=PENDING)
        .filter(_due(now))
        .filter(Q(published_at__isnull=True) | Q(published_at__lt=stale))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return SweepReport(expired=expired, published=publish(ids, now=now) if ids else 0)
