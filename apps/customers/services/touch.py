"""Touch stamps: when a customer last changed in a way segment conditions see.

Customer.touched_seq lets a segment refresh re-evaluate only the customers
stamped since its previous refresh (apps/segments). Stamps only grow, and a
reader must know which stamps may belong to writes it cannot see yet. A stamp
is the writing transaction's id: ids are handed out at the start, and
transactions commit in any order, but a snapshot knows its xmin: every
transaction below it has ended (committed and visible, or rolled back).
The triggers of migration 0002 stamp inserted customers and changed traits,
whoever writes them; `ingest` stamps the customers it stores events for, and
a merge or an account change stamps the customers it affects.
"""

from collections.abc import Iterable

from django.db import connection

from apps.core.bulk import staged_write

from ..models import AccountMembership, Customer

# The SQL expression of the current transaction's touch stamp.
TOUCH_STAMP = "pg_current_xact_id()::text::bigint"
_TRIGGERS = ("customer_touch_insert", "customer_touch_traits")


def customers_touch(customer_ids: Iterable[int]) -> None:
    ids = sorted(customer_ids)
    if ids:
        staged_write(
            "customer_touch",
            (("id", "bigint"),),
            [(pk,) for pk in ids],
            f"UPDATE {Customer._meta.db_table} SET touched_seq = {TOUCH_STAMP} "  # noqa: S608
            "WHERE id IN (SELECT id FROM {staged})",
        )


def account_members_touch(account_ids: Iterable[int]) -> None:
    """Stamp every member of these accounts: an `{"account": C}` condition
    reads the account's traits, so its members may have changed."""
    ids = sorted(account_ids)
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Customer._meta.db_table} SET touched_seq = {TOUCH_STAMP} "  # noqa: S608
                f"WHERE id IN (SELECT customer_id FROM {AccountMembership._meta.db_table} "
                "WHERE account_id = ANY(%s::bigint[]))",
                [ids],
            )


def touch_watermark() -> int:
    """For a reader inside a transaction (a segment refresh): a stamp such that
    every customer stamped below it is visible to this transaction as written,
    and every later change gets a stamp at or above it. Customers stamped at or
    above an earlier watermark are the ones that may have changed since."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return cursor.fetchone()[0]


def touch_stamping_ok() -> bool:
    """Whether the stamping triggers are in place and enabled (a restore
    without them, a `DISABLE TRIGGER` left behind): without them an
    incremental refresh could miss changes, so the refresh checks first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND tgname = ANY(%s) AND tgenabled <> 'D'",
            [Customer._meta.db_table, list(_TRIGGERS)],
        )
        return cursor.fetchone()[0] == len(_TRIGGERS)
