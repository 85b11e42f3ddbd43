"""PostgreSQL timestamps read in C.

Django's PostgreSQL backend reads every `timestamptz` through its own loader,
a subclass of psycopg's pure-Python one (so that it can set the time zone it
wants), although psycopg's C build has a loader several times faster (the
Python one parses each value with a regular expression). `TimestamptzLoader`
below keeps Django's contract (a `timezone` attribute, every value carrying
it) and has the C loader parse. Registered on each new connection
(`connection_created`, apps/core/apps.py) when the C build is there
(`psycopg[binary]`, as pyproject.toml asks; with pure-Python psycopg,
Django's loader stays).

Mirrors these internals (written against Django 5.2.20 and psycopg 3.3.9;
tests/core/mirrors/test_psycopg_timestamps.py fails when any of them
changes, or when the values read stop being Django's):

- `django.db.backends.postgresql.psycopg_any.BaseTzLoader` and
  `register_tzloader`: a loader class with a `timezone` attribute whose
  values are `psycopg`'s with `tzinfo` replaced by it;
  `get_adapters_template`, which registers Django's on each connection;
  `DatabaseWrapper.create_cursor`, which registers Django's again on a
  cursor whose connection's loader has another `timezone` (so ours has
  the connection's).
- `psycopg.types.datetime.TimestamptzLoader` (Python), which Django
  subclasses, and its C twin in psycopg_binary, which parses here.

One difference on purpose: a stored time Python cannot hold (PostgreSQL
keeps years up to 294276, BC ones and ±infinity) is read as the nearest one
it can (`_edge`), where Django's loader raises and fails every page or task
reading that row.

Measured on 2026-12-07 with tests/core/mirrors/measure_core_mirrors.py (a
busy 2-core machine; alternated rounds, best and median; three runs): the
engine's chunk read (250 due enrollments with their customers, FOR UPDATE
SKIP LOCKED) costs 0.065-0.082 ms of CPU per row against 0.085-0.108 with
Django's loader, 21-25% less (18-21% of wall time); `enrollments_advance`
of 250 through a wait node (the engine alone) 12-16% less CPU (10-13% of
wall time); through a send node, where rendering and writing the message
dominate, 1-8% less, within the noise; `messages_deliver` (console
provider) no difference beyond the noise. Kept: every timestamp read goes
through it, and the engine's own path saves well over 5%.
"""

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
    """A stored time Python cannot hold read as the nearest time it can, a
    day inside so that it converts to any zone: one row with such a time
    must not make every page or task that reads it fail. Older versions let
    such times in; ingestion now refuses them."""
    text = bytes(data)
    early = text.startswith(b"-") or text.endswith(b" BC")
    return (EARLIEST if early else LATEST).replace(tzinfo=zone)


def register(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: read timestamps with the C loader, in
    the zone Django set up for the connection."""
    if not available():
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
