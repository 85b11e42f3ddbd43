"""Bulk SQL that runs the same on PostgreSQL and SQLite: many rows into one
statement without hitting parameter limits or per-row round trips."""

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import islice
from operator import attrgetter

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
    # before the statement ran. A transaction keeps the rows for it (inside an
    # open one, no savepoint: a failure here is the caller's to roll back).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            table = f"tenure_staged_{name}"
            types = ", ".join(f"{c} {t}" for c, t in columns)
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {table} ({types}) ON COMMIT DELETE ROWS"
            )
            copy_rows(cursor, table, names, rows)
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


def _row_getter(columns: Sequence) -> Callable[[object], tuple]:
    """A row of these columns from an instance, as COPY takes it: the
    attributes as they are, JSON dumped to text."""
    get = attrgetter(*(f.attname for f in columns))
    json_at = [n for n, f in enumerate(columns) if f.get_internal_type() == "JSONField"]
    if len(columns) == 1:
        single = get
        get = lambda obj: (single(obj),)  # noqa: E731
    if not json_at:
        return get
    encoders = {n: columns[n].encoder for n in json_at}

    def row(obj: object) -> tuple:
        values = list(get(obj))
        for n, encoder in encoders.items():
            if values[n] is not None:
                values[n] = json.dumps(values[n], cls=encoder)
        return tuple(values)

    return row


def copy_rows(cursor, table: str, names: str, rows: Iterable[Sequence]) -> None:
    """COPY `rows` into `table`'s columns `names` (psycopg formats the rows in
    C: no SQL literal to build on our side or to parse on the server's); a
    violated constraint raises Django's IntegrityError, as an INSERT would."""
    with (
        connection.wrap_database_errors,
        cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def rows_insert(model, objects: Sequence, fields: Sequence[str]) -> None:
    """Insert these instances (`fields` of each, in order: with the id when it
    is set beforehand), or any objects with the fields' attribute names
    (`enrollment_id` for a foreign key `enrollment`), in one statement. On
    PostgreSQL a COPY: no per-value preparation, which at a hundred rows costs
    more than the insert, and no `pre_save` (an `auto_now` field must be set
    by the caller); ids not given are not set on the instances. Elsewhere
    Django's bulk_create (which sets them)."""
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    if connection.vendor != "postgresql":
        instances = [
            obj
            if isinstance(obj, model)
            else model(**{f.attname: getattr(obj, f.attname) for f in columns})
            for obj in objects
        ]
        model.objects.bulk_create(instances)
        return
    with connection.cursor() as cursor:
        names = ", ".join(_q(f.column) for f in columns)
        copy_rows(cursor, _q(meta.db_table), names, map(_row_getter(columns), objects))


def rows_update(model, objects: Sequence, fields: Sequence[str]) -> None:
    """Write `fields` of these instances in one UPDATE (Django's bulk_update
    builds a CASE per field and row, which costs more to build than to run at
    a hundred rows), from the rows staged by `staged_write`: COPY on
    PostgreSQL, a VALUES list elsewhere."""
    meta = model._meta
    columns = [meta.pk, *(meta.get_field(name) for name in fields)]
    if connection.vendor == "postgresql":
        rows = list(map(_row_getter(columns), objects))
    else:
        rows = [
            [f.get_db_prep_save(getattr(o, f.attname), connection) for f in columns]
            for o in objects
        ]
    table, pk = _q(meta.db_table), _q(meta.pk.column)
    assignments = ", ".join(f"{_q(f.column)} = v.{_q(f.column)}" for f in columns[1:])
    digest = hashlib.blake2s(" ".join(fields).encode(), digest_size=4).hexdigest()
    staged_write(
        f"rows_{meta.db_table[:35]}_{digest}",  # one per model and set of fields
        [(_q(f.column), f.db_type(connection)) for f in columns],
        rows,
        f"UPDATE {table} SET {assignments} FROM {{staged}} AS v WHERE {table}.{pk} = v.{pk}",  # noqa: S608
    )
