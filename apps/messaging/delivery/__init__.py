"""Delivery: from a queued `Message` row to one provider call, exactly once.

The row is the source of truth; the broker only carries ids. The package:
`publishing` (tasks on commit, the published stamp), `delivering` (the
batch: claim, call, record), `outcomes` (what a provider's answer means and
the write that records it), `suppression` (the list checked again at send
time) and `sweeping` (leases, republishing). Every status change goes
through apps/messaging/transitions.py.

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

BY_ID_ONLY: the statements that take messages by id find them by primary
key and never give PostgreSQL an indexable status test (see
transitions.by_id_in): with a few thousand messages waiting, each claim of
8 rows read them all through the pending index (15 ms instead of 0.1 ms).
"""

from .delivering import DeliveryReport, message_deliver, messages_deliver
from .outcomes import JITTER, backoff
from .publishing import chunked, delivery_enqueue, publish
from .sweeping import LEASE_EXPIRED, SweepReport, messages_sweep

__all__ = [
    "JITTER",
    "LEASE_EXPIRED",
    "DeliveryReport",
    "SweepReport",
    "backoff",
    "chunked",
    "delivery_enqueue",
    "message_deliver",
    "messages_deliver",
    "messages_sweep",
    "publish",
]
