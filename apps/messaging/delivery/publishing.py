"""Publishing delivery tasks: when the sending transaction commits, one task
per chunk of DELIVERY_BATCH_SIZE ids, and the `published_at` stamp that says
a task is on its way (see the package's docstring)."""

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import Message
from ..transitions import PENDING

logger = logging.getLogger(__name__)


def chunked(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


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
        # By primary key only, the rest tested here (see BY_ID_ONLY, in __init__).
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
    from ..tasks import deliver_messages  # the task module imports this one

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
        # primary key only (see BY_ID_ONLY, in __init__).
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
