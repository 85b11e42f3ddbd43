"""Writing a segment's memberships: the diff of a member set against the open
memberships, in one statement.

A member set (SQL selecting customer ids) is diffed against the segment's
open memberships: leavers are closed and newcomers opened in bulk, history is
kept (closed rows stay; coming back opens a new row). Refreshes (refresh.py)
and uploads (static.py) both write through `apply_member_set`; each makes sure
no one else writes the segment's memberships meanwhile (a lease, a row lock).
"""

from collections.abc import Sequence
from datetime import datetime

from django.db import connection

from ..incremental import SCOPE
from ..models import SegmentMembership

# The diff. `members` is the new member set (Django's compiled query); an
# incremental refresh also gives the `scope`, the candidates (incremental.py):
# its members are drawn from them, and only their open memberships are diffed.
#
# One statement (writable WITH queries all see one snapshot, and the member
# set is computed once): a FULL JOIN of the new set with the open memberships
# yields joiners (no open membership) and leavers (open, no longer a member)
# in one pass; the leavers are closed by primary key and the joiners
# inserted. Every step has one possible plan shape: PostgreSQL runs a FULL JOIN
# only as a hash or merge join, the leavers are found by primary key probes,
# and the insert reads no table. NOT EXISTS and IN (… EXCEPT …) were tried
# first: planned on a misestimate (the membership table before its first
# ANALYZE, a condition estimated at a handful of customers) they became nested
# loops that rescan one side per row of the other. At 1,000,000 customers the
# first refresh of a 250,000-member segment took 216 s that way, a
# 10,000-customer change 72 s. The ids come back as two arrays, not a row each.
#
# A full refresh first computes the member set into a temporary table: CREATE
# TABLE AS may run in parallel, which a statement that writes may not, and the
# member query of everyone is most of a full refresh's reading.
#
# No ON CONFLICT: its speculative insertion costs a third more per row, and no
# one else opens memberships of the segment meanwhile (a refresh holds the
# segment's lease, an upload locks its row). Were anyone to, the one-open index
# refuses the duplicate, and the refresh fails, is logged, and runs again.
_DIFF = """
WITH {scope}members (id) AS {members},
diff AS MATERIALIZED (
    SELECT m.id AS joiner, o.id AS leaving
    FROM members AS m
    FULL JOIN ({open}) AS o ON o.customer_id = m.id
    WHERE m.id IS NULL OR o.id IS NULL
),
exited AS (
    UPDATE {table} AS t SET exited_at = %s
    FROM (SELECT unnest(ARRAY(SELECT leaving FROM diff WHERE leaving IS NOT NULL)) AS id) AS l
    WHERE %s AND t.id = l.id AND t.exited_at IS NULL
    RETURNING t.customer_id
),
entered AS (
    INSERT INTO {table} (segment_id, customer_id, entered_at)
    SELECT %s, joiner, %s FROM diff WHERE joiner IS NOT NULL
    RETURNING customer_id
)
SELECT (SELECT array_agg(customer_id) FROM entered),
       (SELECT array_agg(customer_id) FROM exited),
       {count}
"""
_MEMBERS_TABLE = "tenure_members"
# A segment with no open memberships (its first refresh): every member enters,
# and nothing needs joining. The ids entered are the member set's, read back
# from the temporary table: RETURNING them from the insert costs more (at
# 1,000,000 members, 0.6 s of CPU against 0.2 s).
_INSERT_ALL = """
INSERT INTO {table} (segment_id, customer_id, entered_at) SELECT %s, id, %s FROM {members_table}
"""
_INSERTED_ALL = "SELECT array_agg(id), NULL, count(*), NULL FROM {members_table}"
# The segment's open memberships; with a scope, those of the candidates, each
# found by its own probe of the one-open index (OFFSET 0 keeps the subquery from
# being flattened into a join, which a stale estimate of the table could turn
# into a scan of all the segment's open memberships).
_OPEN = "SELECT id, customer_id FROM {table} WHERE segment_id = %s AND exited_at IS NULL"
_OPEN_SCOPED = """SELECT o.id, o.customer_id FROM {scope_name} AS s CROSS JOIN LATERAL (
        SELECT id, customer_id FROM {table}
        WHERE segment_id = %s AND exited_at IS NULL AND customer_id = s.id OFFSET 0) AS o"""
# The open memberships after the statement (the members), and, with a scope,
# the number of candidates.
_COUNT_FULL = "(SELECT count(*) FROM members), NULL"
_COUNT_SCOPED = "NULL, (SELECT count(*) FROM {scope_name})"


def apply_member_set(
    segment_id: int,
    members: tuple[str, Sequence],
    *,
    now: datetime,
    close_others: bool,
    scope: tuple[str, Sequence] | None = None,
    members_before: int = 0,
) -> tuple[list[int], list[int], int, int | None]:
    """Open memberships for the customers in `members` (SQL selecting customer
    ids, and its parameters) who have none; with `close_others`, close those of
    everyone else, or, given a `scope` (SQL selecting the candidates' ids, which
    `members` may read as the table SCOPE), of everyone else in the scope.
    Returns (entered ids, exited ids, open memberships after, the number of
    candidates or None without a scope).

    With a scope, the count after is `members_before` (the segment's count
    before) plus the changes: counting a big segment's open memberships would
    cost in proportion to its size, the one thing a scoped refresh avoids. A
    customer deleted since (its memberships go with it) is counted until the
    next full refresh."""
    members_sql, members_params = members
    scope_sql, scope_params = scope if scope is not None else ("", [])
    table = SegmentMembership._meta.db_table
    with connection.cursor() as cursor:
        if scope:
            parts = {
                "scope": f"{SCOPE} (id) AS MATERIALIZED ({scope_sql}),\n",
                "members": f"MATERIALIZED ({members_sql})",
                "open": _OPEN_SCOPED.format(table=table, scope_name=SCOPE),
                "count": _COUNT_SCOPED.format(scope_name=SCOPE),
            }
            anyone_open = True
        else:
            temporary = _MEMBERS_TABLE
            cursor.execute(f"DROP TABLE IF EXISTS {temporary}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {temporary} ON COMMIT DROP AS {members_sql}",
                members_params,
            )
            parts = {
                "scope": "",
                "members": f"(SELECT id FROM {temporary})",  # noqa: S608
                "open": _OPEN.format(table=table),
                "count": _COUNT_FULL,
            }
            members_params = []
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {table} "  # noqa: S608
                "WHERE segment_id = %s AND exited_at IS NULL)",
                [segment_id],
            )
            (anyone_open,) = cursor.fetchone()
        if not anyone_open:
            cursor.execute(
                _INSERT_ALL.format(table=table, members_table=temporary), [segment_id, now]
            )
            cursor.execute(_INSERTED_ALL.format(members_table=temporary))
        else:
            cursor.execute(
                _DIFF.format(**parts, table=table),
                # Appending closes nothing: the exit condition is then false.
                [*scope_params, *members_params, segment_id, now, close_others, segment_id, now],
            )
        entered_ids, exited_ids, count, candidates = cursor.fetchone()
        if not scope:
            cursor.execute(f"DROP TABLE {temporary}")
    entered, exited = sorted(entered_ids or []), sorted(exited_ids or [])
    if scope:
        count = members_before + len(entered) - len(exited)
    elif not close_others:
        # Appending: the open memberships are the list and more.
        count = SegmentMembership.objects.filter(
            segment_id=segment_id, exited_at__isnull=True
        ).count()
    return entered, exited, count, candidates
