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


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _array_type(field) -> str:
    """The PostgreSQL type of a column's array (JSON goes as text, cast where
    it is written)."""
    return "text" if field.get_internal_type() == "JSONField" else field.db_type(connection)


def _pg_columns(columns: Sequence, objects: Sequence) -> tuple[str, list[list], list[str]]:
    """For `unnest`: the typed array placeholders, one list of values per
    column (the instances' attributes as they are, JSON dumped to text), and
    each column as it is written from the unnested row `v`."""
    arrays, written = [], []
    for f in columns:
        values = [getattr(obj, f.attname) for obj in objects]
        if f.get_internal_type() == "JSONField":
            values = [None if v is None else json.dumps(v, cls=f.encoder) for v in values]
            written.append(f"v.{_q(f.column)}::jsonb")
        else:
            written.append(f"v.{_q(f.column)}")
        arrays.append(values)
    placeholders = ", ".join(f"%s::{_array_type(f)}[]" for f in columns)
    return placeholders, arrays, written


def rows_insert(model, objects: Sequence, fields: Sequence[str]) -> None:
    """Insert these instances (`fields` of each, in order: with the id when it
    is set beforehand) in one statement. On PostgreSQL an INSERT … SELECT over
    one array per column: no per-value preparation, which at a hundred rows
    costs more than the insert, and no `pre_save` (an `auto_now` field must
    be set by the caller); ids not given are not set on the instances.
    Elsewhere Django's bulk_create (which sets them)."""
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objects)
        return
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    placeholders, arrays, written = _pg_columns(columns, objects)
    names = ", ".join(_q(f.column) for f in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_q(meta.db_table)} ({names}) SELECT {', '.join(written)} "  # noqa: S608
            f"FROM unnest({placeholders}) WITH ORDINALITY AS v ({names}, n) ORDER BY v.n",
            arrays,
        )


def rows_update(model, objects: Sequence, fields: Sequence[str]) -> None:
    """Write `fields` of these instances in one UPDATE (Django's bulk_update
    builds a CASE per field and row, which costs more to build than to run at
    a hundred rows): from one array per column on PostgreSQL, from a VALUES
    list elsewhere."""
    meta = model._meta
    columns = [meta.pk, *(meta.get_field(name) for name in fields)]
    names = ", ".join(_q(f.column) for f in columns)
    if connection.vendor == "postgresql":
        placeholders, params, written = _pg_columns(columns, objects)
        rows = f"SELECT * FROM unnest({placeholders})"  # noqa: S608
    else:
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        params = [
            f.get_db_prep_save(getattr(obj, f.attname), connection)
            for obj in objects
            for f in columns
        ]
        rows = f"VALUES {', '.join([row] * len(objects))}"
        written = [f"v.{_q(f.column)}" for f in columns]
    assignments = ", ".join(
        f"{_q(f.column)} = {value}" for f, value in zip(columns[1:], written[1:], strict=True)
    )
    table, pk = _q(meta.db_table), _q(meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH v ({names}) AS ({rows}) "  # noqa: S608
            f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{pk} = v.{pk}",
            params,
        )
