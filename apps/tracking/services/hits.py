"""Recording hits: the open pixel and the click redirect, and the links a
click can go to.

Requests are cheap and processing is in bulk (`processing.tracking_process`):
each hit writes one `Engagement` row, in one statement, flagged as machine
when the request alone says so (HEAD, a scanner's user agent).
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from django.db import DatabaseError, connection, transaction

from apps.messaging.models import Message

from ..detection import request_machine_reason
from ..models import Engagement, TrackedLink

K = Engagement.Kind
MAX_USER_AGENT = Engagement._meta.get_field("user_agent").max_length


def tracked_links_store(*, message_id: int, urls: Sequence[str]) -> None:
    """Store the links of a rendered email (position = index). Rendering the
    same message again stores the same positions again (upsert)."""
    tracked_links_store_many({message_id: urls})


def tracked_links_store_many(links: Mapping[int, Sequence[str]]) -> None:
    """`tracked_links_store` for many messages, {message id: urls}, in one insert."""
    rows = [
        TrackedLink(message_id=message_id, position=i, url=url)
        for message_id, urls in links.items()
        for i, url in enumerate(urls)
    ]
    if rows:
        TrackedLink.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["message", "position"],
            update_fields=["url"],
        )


_ENGAGEMENT_COLUMNS = (
    "message_id, kind, source, occurred_at, created_at, machine, machine_reason, "
    "link_id, url, user_agent, provider_event_id, processed_at, error"
)
# One statement each; the SELECT makes a vanished message or link insert nothing.
_OPEN_INSERT = (
    f"INSERT INTO {Engagement._meta.db_table} ({_ENGAGEMENT_COLUMNS}) "  # noqa: S608
    "SELECT id, %s, %s, %s, %s, %s, %s, NULL, '', %s, NULL, NULL, '' "
    f"FROM {Message._meta.db_table} WHERE id = %s"
)
_CLICK_INSERT = (
    f"INSERT INTO {Engagement._meta.db_table} ({_ENGAGEMENT_COLUMNS}) "  # noqa: S608
    "SELECT message_id, %s, %s, %s, %s, %s, %s, id, url, %s, NULL, NULL, '' "
    f"FROM {TrackedLink._meta.db_table} WHERE message_id = %s AND position = %s "
    "RETURNING url"
)


def _insert_hit(statement: str, params: list) -> tuple | None:
    """Run a hit's INSERT (one statement) in a transaction of its own that
    does not wait for PostgreSQL to flush its write-ahead log: the request
    never waits for the disk, and a database crash could lose only the hits
    of its last fraction of a second (never a half-written row). Only the
    pixel and the redirect do this; webhooks and processing commit durably.

    Returns the statement's RETURNING row, or (rowcount,) without one."""
    if not connection.in_atomic_block:
        return _insert_hit_one_trip(statement, params)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(statement, params)
        return cursor.fetchone() if cursor.description else (cursor.rowcount,)


def _insert_hit_one_trip(statement: str, params: list) -> tuple | None:
    """The same in a single round trip (the request's only one besides
    Django's connection check): begin, the setting, the INSERT and the commit
    sent together, which psycopg's client-side binding cursors allow. Only
    outside a transaction (an open one would be committed by it)."""
    with connection.cursor() as cursor:
        try:
            cursor.execute(
                f"BEGIN; SET LOCAL synchronous_commit TO OFF; {statement}; COMMIT", params
            )
        except DatabaseError:
            cursor.execute("ROLLBACK")  # a failed statement leaves the block open
            raise
        raw = cursor.cursor
        raw.nextset()  # SET
        raw.nextset()  # the INSERT
        return raw.fetchone() if raw.description else (raw.rowcount,)


def open_record(*, message_id: int, now: datetime, method: str, user_agent: str) -> bool:
    """Record an open from the pixel, in one statement; False when the message
    does not exist (any more). Processed later, in bulk."""
    reason = request_machine_reason(method=method, user_agent=user_agent)
    agent = user_agent[:MAX_USER_AGENT]
    row = _insert_hit(
        _OPEN_INSERT,
        [K.OPEN, Engagement.Source.PIXEL, now, now, bool(reason), reason, agent, message_id],
    )
    return row == (1,)


def click_record(
    *, message_id: int, position: int, now: datetime, method: str, user_agent: str
) -> str | None:
    """Record a click from the redirect, in one statement, and return the URL
    stored for this message and position; None when there is none (the
    caller then redirects nowhere)."""
    reason = request_machine_reason(method=method, user_agent=user_agent)
    agent = user_agent[:MAX_USER_AGENT]
    row = _insert_hit(
        _CLICK_INSERT,
        [K.CLICK, Engagement.Source.REDIRECT, now, now, bool(reason), reason, agent,
         message_id, position],
    )  # fmt: skip
    return row[0] if row else None
