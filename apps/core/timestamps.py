"""PostgreSQL timestamps read in C.

Django's PostgreSQL backend reads every `timestamptz` through its own loader,
a subclass of psycopg's pure-Python one (so that it can set the time zone it
wants), although psycopg's C build has a loader about fifteen times faster
(the Python one parses each value with a regular expression: some 5 us a
value, and a chunk of enrollments with their customers reads thousands).
`TimestamptzLoader` below keeps Django's contract (a `timezone` attribute,
every value carrying it) and has the C loader parse. Registered on each new
connection (`connection_created`) when the C build is there."""

from psycopg import adapters
from psycopg.adapt import Loader
from psycopg.pq import Format

TIMESTAMPTZ = adapters.types["timestamptz"].oid
_FAST = adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def available() -> bool:
    """Whether psycopg's C build is installed (its loaders are not Python classes)."""
    return not _FAST.__module__.startswith("psycopg.")


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
            return self._load(data).replace(tzinfo=self.timezone)

    connection.connection.adapters.register_loader(TIMESTAMPTZ, TimestamptzLoader)
