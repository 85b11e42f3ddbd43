"""Bulk SQL: many rows into one statement without per-row round trips or a
parameter per value.

One convention for staged rows: rows a statement reads in bulk are COPYed
into a temporary table typed like their destination columns and read there as
`{staged}` (`staged_write`). A row is a tuple of Python values as psycopg
writes them (datetimes as they are, JSON as its text: the typed column parses
it), never SQL text built on our side."""

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from operator import attrgetter

from django.db import connection, transaction
from django.db.models.expressions import RawSQL

# Rows per chunk where work is cut into chunks (a statement, a transaction, a
# task): bounds what one holds in memory and in locks.
SQL_CHUNK = 1000


def chunks(items: Sequence, size: int = SQL_CHUNK) -> Iterable[Sequence]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def staged_write(
    name: str,
    columns: Sequence[tuple[str, str]],
    rows: list,
    statement: str,
    params: Sequence | dict | None = None,
):
    """Run `statement` with `rows` readable as the table `{staged}`, and return
    what it returns. The rows are COPYed into a temporary table of `columns`
    (name, SQL type): no parameter limit, no query splitting.

    The temporary table has no statistics, so the planner guesses its size
    (thousands of rows): joined to a big table it may choose to read all of
    it. A statement that joins one passes the keys as well, as an array
    parameter (`params`, `= ANY(%s)`), whose length the planner knows."""
    returned: list[tuple] = []
    names = ", ".join(c for c, _ in columns)
    table = f"tenure_staged_{name}"
    types = ", ".join(f"{c} {t}" for c, t in columns)
    # The temporary table empties at commit: in autocommit it would be empty
    # before the statement ran. A transaction keeps the rows for it (inside an
    # open one, no savepoint: a failure here is the caller's to roll back).
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({types}) ON COMMIT DELETE ROWS")
        copy_rows(cursor, table, names, rows)
        cursor.execute(statement.replace("{staged}", table), params)
        if cursor.description:
            returned = cursor.fetchall()
        # Emptied for the next batch in this transaction (commit empties it
        # too); DELETE, not TRUNCATE, which churns the catalog every time.
        cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table name
    return returned


def values_subquery(values: Sequence[str]) -> RawSQL:
    """`SELECT` of the given strings, for `field__in=`: one parameter (an
    array) however many values, instead of a placeholder each."""
    return RawSQL("SELECT unnest(%s::text[])", [list(values)])


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
    (`enrollment_id` for a foreign key `enrollment`), in one COPY: no
    per-value preparation, which at a hundred rows costs more than the insert
    (Django's bulk_create), and no `pre_save` (an `auto_now` field must be set
    by the caller); ids not given are not set on the instances."""
    meta = model._meta
    columns = [meta.get_field(name) for name in fields]
    with connection.cursor() as cursor:
        names = ", ".join(_q(f.column) for f in columns)
        copy_rows(cursor, _q(meta.db_table), names, map(_row_getter(columns), objects))


def rows_update(model, objects: Sequence, fields: Sequence[str]) -> None:
    """Write `fields` of these instances in one UPDATE from their rows staged
    by `staged_write` (Django's bulk_update builds a CASE per field and row,
    which costs more to build than to run at a hundred rows)."""
    meta = model._meta
    columns = [meta.pk, *(meta.get_field(name) for name in fields)]
    table, pk = _q(meta.db_table), _q(meta.pk.column)
    assignments = ", ".join(f"{_q(f.column)} = v.{_q(f.column)}" for f in columns[1:])
    digest = hashlib.blake2s(" ".join(fields).encode(), digest_size=4).hexdigest()
    staged_write(
        f"rows_{meta.db_table[:35]}_{digest}",  # one per model and set of fields
        [(_q(f.column), f.db_type(connection)) for f in columns],
        list(map(_row_getter(columns), objects)),
        f"UPDATE {table} SET {assignments} FROM {{staged}} AS v WHERE {table}.{pk} = v.{pk}",  # noqa: S608
    )
