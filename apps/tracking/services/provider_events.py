"""Storing provider events: what SendGrid's event webhook and Twilio's status
callbacks report is stored as received (one bulk insert, duplicates skipped on
the provider's event id) and answered at once; `processing.tracking_process`
acts on it afterwards, in bulk.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from apps.core.bulk import staged_write

from ..events import IncomingEvent
from ..models import ProviderEvent

logger = logging.getLogger(__name__)


@dataclass
class StoreResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    refused: int = 0  # items that could not be read: stored with their error


_COLUMNS = (
    ("provider", "text"),
    ("event_id", "text"),
    ("kind", "text"),
    ("provider_message_id", "text"),
    ("address", "text"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("payload", "text"),
    ("processed_at", "timestamptz"),
    ("error", "text"),
)
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_INSERT = (
    f"INSERT INTO {ProviderEvent._meta.db_table} ({_NAMES}) "  # noqa: S608
    f"SELECT {_NAMES.replace('payload', 'payload::jsonb')} FROM {{staged}} WHERE true "
    # In event id order: concurrent deliveries of the same events wait for
    # each other in one order, never in a cycle.
    "ORDER BY provider, event_id "
    "ON CONFLICT (provider, event_id) DO NOTHING RETURNING error"
)


def provider_events_store(events: Sequence[IncomingEvent], *, now: datetime) -> StoreResult:
    """Store a webhook's events as received, each once (a repeat of an event
    id, in this batch, from an earlier delivery or from a concurrent one,
    stores nothing: `ON CONFLICT DO NOTHING` on the unique event id), in one
    bulk statement, and have them processed once the transaction commits."""
    result = StoreResult(received=len(events))
    if not events:
        return result
    unique: dict[tuple[str, str], IncomingEvent] = {}
    for event in events:
        unique.setdefault((event.provider, event.event_id), event)
    rows = [
        (e.provider, e.event_id, e.kind, e.provider_message_id[:200], e.address[:254],
         e.occurred_at, now, json.dumps(e.payload),
         # A refused item is stored with its error and never processed.
         now if e.error else None, e.error)
        for e in unique.values()
    ]  # fmt: skip
    with transaction.atomic():
        inserted = staged_write("providerevent", _COLUMNS, rows, _INSERT)
        if any(not error for (error,) in inserted):
            transaction.on_commit(_publish_processing)
    result.stored = len(inserted)
    result.duplicates = len(events) - len(inserted)
    result.refused = sum(1 for (error,) in inserted if error)
    return result


def _publish_processing() -> None:
    """Ask a tracking worker to process what was just stored; if the broker is
    down, beat's periodic run picks it up instead."""
    from ..tasks import process_tracking

    try:
        process_tracking.delay()
    except Exception:
        logger.warning("tracking: could not publish process_tracking; beat will run it", exc_info=1)
