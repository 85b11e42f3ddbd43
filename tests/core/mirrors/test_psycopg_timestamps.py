"""apps/core/mirrors/psycopg_timestamps.py reads timestamps with psycopg's C
loader in Django's place. These tests fail when the Django and psycopg
internals it mirrors change underneath it (then read the new upstream code,
bring the mirror in line, and record the new fingerprints), and check that
it reads what Django's own loader reads."""

import hashlib
import inspect
from datetime import UTC

import django
import psycopg
import pytest
from django.db import DataError, connection
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import (
    BaseTzLoader,
    get_adapters_template,
    register_tzloader,
)
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader

from apps.core.mirrors import psycopg_timestamps

pytestmark = pytest.mark.django_db

# sha256 of `inspect.getsource` of each mirrored upstream piece, Django 5.2.20
# and psycopg 3.3.9 (the C loader is checked by what it reads, below).
UPSTREAM = {
    BaseTzLoader: "54da5c943c5192bcf4c8acc8f7b53a2a9e097510802b507325ce0e3b86131532",
    register_tzloader: "b98320a95484038985e797cdef1a54be3d2dba0f82b4933b3f09f708e6bc7374",
    get_adapters_template.__wrapped__: (
        "5dffb67d36e05cee1fb70e343d89e89a822b0fb32d8ad4f2938c1fab3a3502d3"
    ),
    base.DatabaseWrapper.create_cursor: (
        "5309d92ffca3e8718d0054b64fcd32ce8fb9cb7f260b914e844d4efcda62f81a"
    ),
    TimestamptzLoader: "b29652fbe498ffc00f104fdfea6b064eea0f7c1ca2cef986bd22ad86d5336ef1",
}

VALUES = [
    "2026-11-21 18:45:00.123456+00",
    "2020-03-29 01:30:00+02",  # a daylight-saving change in Paris
    "1999-12-31 23:59:59.999999-11:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59+00",
    "2024-02-29 12:00:00+05:45",
    "1970-01-01 00:00:00+00",
]


def read(values: list[str]) -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(%s::timestamptz[])", [values])
        return [row[0] for row in cursor.fetchall()]


def test_the_mirrored_internals_are_those_it_was_written_against():
    changed = [
        f"{piece.__module__}.{piece.__qualname__}"
        for piece, recorded in UPSTREAM.items()
        if hashlib.sha256(inspect.getsource(piece).encode()).hexdigest() != recorded
    ]
    assert changed == [], (
        f"Django {django.get_version()} or psycopg {psycopg.__version__} changed what "
        "apps/core/mirrors/psycopg_timestamps.py mirrors"
    )


def test_timestamps_are_read_in_c_with_djangos_zone():
    read(VALUES[:1])  # connected
    loader = connection.connection.adapters.get_loader(psycopg_timestamps.TIMESTAMPTZ, Format.TEXT)

    assert psycopg_timestamps.available()
    assert loader.__module__ == psycopg_timestamps.__name__
    assert loader.timezone is connection.timezone is UTC


def test_timestamps_read_in_c_equal_djangos_own_reading():
    ours = read(VALUES)
    with connection.cursor() as cursor:

        class Djangos(BaseTzLoader):
            timezone = connection.timezone

        cursor.cursor.adapters.register_loader(psycopg_timestamps.TIMESTAMPTZ, Djangos)
        cursor.execute("SELECT unnest(%s::timestamptz[])", [VALUES])
        theirs = [row[0] for row in cursor.fetchall()]

    assert ours == theirs
    assert [value.tzinfo for value in ours] == [UTC] * len(VALUES)
    assert [value.utcoffset() for value in ours] == [value.utcoffset() for value in theirs]
    assert ours[1].isoformat() == "2020-03-28T23:30:00+00:00"


def test_times_python_cannot_hold_are_read_at_the_edge_where_django_raises():
    texts = ["infinity", "-infinity", "20000-01-01 00:00:00+00", "0044-03-15 12:00:00+00 BC"]

    edges = read(texts)

    assert edges == [psycopg_timestamps.LATEST.replace(tzinfo=UTC),
                     psycopg_timestamps.EARLIEST.replace(tzinfo=UTC),
                     psycopg_timestamps.LATEST.replace(tzinfo=UTC),
                     psycopg_timestamps.EARLIEST.replace(tzinfo=UTC)]  # fmt: skip
    with connection.cursor() as cursor:
        register_tzloader(connection.timezone, cursor.cursor)
        for text in texts:
            cursor.execute("SELECT %s::timestamptz", [text])
            with pytest.raises(DataError):
                cursor.fetchone()
