"""PostgreSQL timestamps read in C.

Django's PostgreSQL backend reads every `timestamptz` through its own loader,
a subclass of psycopg's pure-Python one (so that it can set the time zone it
wants), although psycopg's C build has a loader about fifteen times faster
(the Python one parses each value with a regular expression: some 5 us a
value, and a chunk of enrollments with their customers reads thousands).
`TimestamptzLoader` below keeps Django's contract (a `timezone` attribute,
every value carrying it) and has the C loader parse. Registered on each new
connection (`connection_created`) when the C build is there."""

from datetime import datetime

from psycopg import DataError, adapters
from psycopg.adapt import Loader
from psycopg.pq import Format

TIMESTAMPTZ = adapters.types["timestamptz"].oid
_FAST = adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def available() -> bool:
    """Whether psycopg's C build is installed (its loaders are not Python classes)."""
    return not _FAST.__module__.startswith("psycopg.")


# A day inside Python's range: shown in any zone, they stay in range.
EARLIEST = datetime(1, 1, 2)
LATEST = datetime(9999, 12, 30)


def _edge(data, zone) -> datetime:
    """A stored time Python cannot hold (PostgreSQL keeps years up to 294276,
    BC ones and ±infinity; Python stops at 1 and 9999) read as the nearest
    time it can, a day inside so that it converts to any zone: one row with
    such a time must not make every page or task that reads it fail. Older
    versions let such times in; ingestion now refuses them."""
    text = bytes(data)
    early = text.startswith(b"-") or text.endswith(b" BC")
    return (EARLIEST if early else LATEST).replace(tzinfo=zone)


def register(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: on PostgreSQL, read timestamps with the
    C loader, in the zone Django set up for the connection."""
    if connection.vendor != "postgresql" or not available():
        return

    class TimestamptzLoader(Loader):
        timezone = connection.timezone  # what Django's create_cursor compares

        def __init__(self, oid: int, context=None) -> None:
            super().__init__(oid, context)
            self._load = _FAST(oid, context).load

        def load(self, data):
            try:
                return self._load(data).replace(tzinfo=self.timezone)
            except DataError:
                return _edge(data, self.timezone)

    connection.connection.adapters.register_loader(TIMESTAMPTZ, TimestamptzLoader)
