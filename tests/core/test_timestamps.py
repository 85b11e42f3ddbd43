"""Timestamps from PostgreSQL are read by psycopg's C loader, with the same
values and zones as Django's own loader gives."""

from datetime import UTC

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import BaseTzLoader
from psycopg.pq import Format

from apps.core import timestamps

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

VALUES = [
    "2026-11-21 18:45:00.123456+00",
    "2020-03-29 01:30:00+02",  # a daylight-saving change in Paris
    "1999-12-31 23:59:59.999999-11:30",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59+00",
]


def read(values: list[str]) -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(%s::timestamptz[])", [values])
        return [row[0] for row in cursor.fetchall()]


def test_timestamps_are_read_in_c_with_djangos_zone():
    read(VALUES[:1])  # connected
    loader = connection.connection.adapters.get_loader(timestamps.TIMESTAMPTZ, Format.TEXT)

    assert timestamps.available()
    assert loader.__module__ == timestamps.__name__
    assert loader.timezone is connection.timezone is UTC


def test_timestamps_read_in_c_equal_djangos_own_reading():
    ours = read(VALUES)
    with connection.cursor() as cursor:

        class Djangos(BaseTzLoader):
            timezone = connection.timezone

        cursor.cursor.adapters.register_loader(timestamps.TIMESTAMPTZ, Djangos)
        cursor.execute("SELECT unnest(%s::timestamptz[])", [VALUES])
        theirs = [row[0] for row in cursor.fetchall()]

    assert ours == theirs
    assert [value.tzinfo for value in ours] == [UTC] * len(VALUES)
    assert [value.utcoffset() for value in ours] == [value.utcoffset() for value in theirs]
    assert ours[1].isoformat() == "2020-03-28T23:30:00+00:00"
