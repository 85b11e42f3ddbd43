"""Bulk SQL that runs the same on PostgreSQL and SQLite: many rows into one
statement without hitting parameter limits or per-row round trips."""

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import islice

from django.db import connection, transaction
from django.db.models.expressions import RawSQL

# Rows per statement on SQLite: well under its 32,766 bound parameters.
SQL_CHUNK = 1000


def chunks(items: Sequence, size: int = SQL_CHUNK) -> Iterable[Sequence]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def staged_write(name: str, columns: Sequence[tuple[str, str]], rows: list, statement: str):
    """Run `statement` with `rows` readable as the table `{staged}`, and return
    what it returns. PostgreSQL gets the rows by COPY into a temporary table (no
    parameter limit, no query splitting); SQLite as a VALUES common table
    expression in chunks under its parameter limit."""
    returned: list[tuple] = []
    names = ", ".join(c for c, _ in columns)
    # The temporary table empties at commit: in autocommit it would be empty
    # before the statement ran. A transaction (a savepoint if one is open) keeps
    # the rows for it.
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            table = f"tenure_staged_{name}"
            types = ", ".join(f"{c} {t}" for c, t in columns)
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {table} ({types}) ON COMMIT DELETE ROWS"
            )
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(statement.replace("{staged}", table))
            if cursor.description:
                returned = cursor.fetchall()
            # Emptied for the next batch in this transaction (commit empties it
            # too); DELETE, not TRUNCATE, which churns the catalog every time.
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table name
        else:
            placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
            for chunk in chunks(rows):
                cursor.execute(
                    f"WITH staged({names}) AS (VALUES {', '.join([placeholder] * len(chunk))}) "
                    + statement.replace("{staged}", "staged"),
                    [value for row in chunk for value in row],
                )
                if cursor.description:
                    returned += cursor.fetchall()
    return returned


def datetime_adapter() -> Callable[[datetime], object]:
    """How a datetime goes into a staged row: as is for PostgreSQL's COPY, as
    Django's text form for SQLite. Looked up once per batch, not per value."""
    if connection.vendor == "postgresql":
        return lambda value: value
    return connection.ops.adapt_datetimefield_value


def values_subquery(values: Sequence[str]) -> RawSQL:
    """`SELECT` of the given strings, for `field__in=`: one parameter however
    many values (an array on PostgreSQL, a JSON list on SQLite), instead of a
    placeholder each."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::text[])", [list(values)])
    return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(list(values))])
