"""Delivering a batch: each due message claimed by a compare-and-set, its
provider called once, DELIVERY_CONCURRENCY calls at a time, and the answers
recorded with the next group's claims (see the package's docstring)."""

import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .. import ratelimit
from ..models import Message
from ..providers import Provider, get_provider
from ..transitions import PENDING, by_id_in, messages_claim
from .outcomes import _call, _mark_sent, _outcome, _record_sent, _Sent, _write_results
from .suppression import drop_suppressed

logger = logging.getLogger(__name__)

S = Message.Status
# A worker waits this long at most for its rate limit's next token; a longer
# wait hands the messages back (queued, send_after) instead of holding a worker.
MAX_RATE_WAIT_S = 1.0
# Of the task's soft time limit, the share a batch may use before it hands
# its remaining messages back to the sweeper (so a storm of timeouts never
# gets a batch killed mid-call).
BATCH_BUDGET_SHARE = 0.5


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
    """Deliver each due message among `message_ids` (see the package's
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
    # By primary key only, the status tested here (see BY_ID_ONLY, in __init__).
    rows = [m for m in Message.objects.filter(pk__in=ids).order_by("pk") if m.status in PENDING]
    report.skipped = len(ids) - len(rows)
    due = [m for m in rows if m.send_after is None or m.send_after <= now]
    if not_due := [m.pk for m in rows if m.send_after is not None and m.send_after > now]:
        # Published early (or the clock moved): the sweeper publishes it when due.
        by_id_in(not_due, PENDING).update(published_at=None)
        report.not_due = len(not_due)
    due, report.suppressed = drop_suppressed(due, now=now)

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
    messages: Sequence[Message], provider: Provider, *, now: datetime, sent: Sequence[_Sent] = ()
) -> list[Message]:
    """The compare-and-set, one statement for a group: each due, waiting
    message becomes `sending` under a lease, its attempt counted before the
    call. Returns those claimed; the others are no longer waiting (another
    worker has them, or they were sent or cancelled meanwhile). `sent`: the
    previous group's sent records, written by the same statement."""
    if not messages:
        return []
    lease_until = now + timedelta(seconds=settings.DELIVERY_LEASE_S)
    won = messages_claim(
        [m.pk for m in messages],
        provider=provider.name,
        lease_until=lease_until,
        now=now,
        sent=[one.record for one in sent],
    )
    _mark_sent(sent)
    claimed = [m for m in messages if m.pk in won]
    for message in claimed:
        message.attempts += 1
        message.status, message.provider = S.SENDING, provider.name
        message.lease_until = lease_until
    return claimed


def _hand_back(ids: Sequence[int], *, until: datetime | None) -> None:
    """Unclaimed messages this batch will not get to: the sweeper publishes
    them again (when `until` has passed, if given)."""
    fields = {"published_at": None}
    if until is not None:
        fields["send_after"] = until
    by_id_in(ids, PENDING).update(**fields)
