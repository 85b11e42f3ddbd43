"""Who is told about newly ingested usage data: a plain registry of functions.

`customers` never imports the apps above it; they register here instead. A
listener is called once per committed `ingest` call (never once per event),
from `transaction.on_commit`, with the ids of the events stored, of the
customers whose traits or contact columns changed, and the source of the data:
"api" (live), "import" or "demo" (backfills, which must not start journeys).
Listeners run inside the API request, so they must be quick: hand real work to
a Celery task.

    @on_ingest
    def start_event_journeys(*, event_ids, changed_customer_ids, now, source): ...

Work that must not be lost (the broker may be down at commit, or the process
may die between the commit and its publication) is written as a row in the
ingest's own transaction instead: `on_ingest_in_transaction` listeners are
called with the same arguments before the commit, and what they write commits
or rolls back with the events. An error there fails the ingest (nothing is
half-written), so such a listener does one cheap write and nothing else; it
may publish its row from `transaction.on_commit`, and a sweeper of its own
publishes whatever that publication missed.
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

logger = logging.getLogger(__name__)


class IngestListener(Protocol):
    def __call__(
        self,
        *,
        event_ids: Sequence[int],
        changed_customer_ids: Sequence[int],
        now: datetime,
        source: str,
    ) -> None: ...


_listeners: list[IngestListener] = []
_in_transaction: list[IngestListener] = []


def on_ingest(fn: IngestListener) -> IngestListener:
    """Register `fn` (usable as a decorator); registering twice is a no-op."""
    if fn not in _listeners:
        _listeners.append(fn)
    return fn


def on_ingest_in_transaction(fn: IngestListener) -> IngestListener:
    """Register `fn` to be called inside the ingest's transaction (see the
    module's docstring); registering twice is a no-op."""
    if fn not in _in_transaction:
        _in_transaction.append(fn)
    return fn


def remove_listener(fn) -> None:
    for registry in (_listeners, _in_transaction, _on_merge):
        if fn in registry:
            registry.remove(fn)


def notify_in_transaction(
    event_ids: Sequence[int], changed_customer_ids: Sequence[int], now: datetime, source: str
) -> None:
    """Call every in-transaction listener; an error propagates and rolls the
    ingest back."""
    if not event_ids and not changed_customer_ids:
        return
    for listener in list(_in_transaction):
        listener(
            event_ids=event_ids, changed_customer_ids=changed_customer_ids, now=now, source=source
        )


def notify(
    event_ids: Sequence[int], changed_customer_ids: Sequence[int], now: datetime, source: str
) -> None:
    """Call every listener once; the data is committed, so one listener's
    failure is logged and does not keep the others from hearing."""
    if not event_ids and not changed_customer_ids:
        return
    for listener in list(_listeners):
        try:
            listener(
                event_ids=event_ids,
                changed_customer_ids=changed_customer_ids,
                now=now,
                source=source,
            )
        except Exception:
            logger.exception(
                "ingest listener %s failed (%d events, %d customers changed)",
                getattr(listener, "__qualname__", listener),
                len(event_ids),
                len(changed_customer_ids),
            )


# --- merges -------------------------------------------------------------------------
#
# When profiles merge (an anonymous visitor identified as a known customer, an
# `alias`), the apps above hear of it inside the merging transaction, with the
# (merged profile id, customer id) pairs: journeys ends the merged profile's
# active enrollments. Like `on_ingest_in_transaction`, one cheap set-based
# write; an error rolls the merge back.


class MergeListener(Protocol):
    def __call__(self, *, pairs: Sequence[tuple[int, int]], now: datetime) -> None: ...


_on_merge: list[MergeListener] = []


def on_merge_in_transaction(fn: MergeListener) -> MergeListener:
    """Register `fn`; registering twice is a no-op."""
    if fn not in _on_merge:
        _on_merge.append(fn)
    return fn


def notify_merged(pairs: Sequence[tuple[int, int]], now: datetime) -> None:
    for listener in list(_on_merge):
        listener(pairs=pairs, now=now)
