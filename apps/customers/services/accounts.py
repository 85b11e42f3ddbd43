"""Accounts from Segment's `group` call: the account upserted (traits merged
in call order), the customer made a member (or its membership refreshed).

Members are stamped as touched when their account's traits change, or when
they join it, so an incremental segment refresh re-evaluates `{"account": C}`
conditions for exactly them.
"""

import json
from collections.abc import Sequence
from datetime import datetime

from django.db import connection

from apps.core.bulk import staged_write

from ..models import Account, AccountMembership
from ..schemas import GroupIn
from .profiles import Raced
from .touch import account_members_touch, customers_touch

_TRAITS = Account._meta.get_field("traits")


def accounts_group(groups: Sequence[tuple[GroupIn, int]], *, now: datetime) -> None:
    """Apply group calls, given as (call, customer id) in call order."""
    wanted: dict[str, dict] = {}
    for call, _ in groups:
        wanted[call.group_id] = {**wanted.get(call.group_id, {}), **call.traits}
    accounts = _accounts_locked(sorted(wanted))
    changed, new = [], []
    for external_id, traits in wanted.items():
        account = accounts.get(external_id)
        if account is None:
            new.append((external_id, _name(traits), json.dumps(traits), now))
            continue
        pk, stored, name = account
        merged = {**(stored if isinstance(stored, dict) else {}), **traits}
        if merged != stored or _name(traits, name) != name:
            changed.append((pk, _name(traits, name), json.dumps(merged), now))
    table = Account._meta.db_table
    if new:
        created = staged_write(
            "account_new",
            (("external_id", "text"), ("name", "text"), ("traits", "jsonb"), ("at", "timestamptz")),
            new,
            f"INSERT INTO {table} (external_id, name, traits, created_at, updated_at) "  # noqa: S608
            "SELECT external_id, name, traits, at, at FROM {staged} WHERE true "
            "ORDER BY external_id ON CONFLICT (external_id) DO NOTHING RETURNING id, external_id",
        )
        if len(created) < len(new):
            raise Raced("an account was created meanwhile")
        accounts.update((external_id, (pk, None, None)) for pk, external_id in created)
    if changed:
        staged_write(
            "account_traits",
            (("id", "bigint"), ("name", "text"), ("traits", "jsonb"), ("at", "timestamptz")),
            changed,
            f"UPDATE {table} AS a SET name = s.name, traits = s.traits, "  # noqa: S608
            "updated_at = s.at FROM {staged} AS s WHERE a.id = s.id",
        )
        account_members_touch(pk for pk, *_ in changed)
    # Joined and last grouped when the call says it happened (an import's
    # group calls carry their own times), the latest of a batch's.
    grouped: dict[tuple[int, int], datetime] = {}
    for call, customer_id in groups:
        key = (customer_id, accounts[call.group_id][0])
        at = call.timestamp or now
        grouped[key] = max(at, grouped.get(key, at))
    memberships = sorted(grouped.items())
    joined = staged_write(
        "account_member",
        (("customer_id", "bigint"), ("account_id", "bigint"), ("at", "timestamptz")),
        [(c, a, at) for (c, a), at in memberships],
        f"INSERT INTO {AccountMembership._meta.db_table} "  # noqa: S608
        "(customer_id, account_id, created_at, grouped_at) "
        "SELECT customer_id, account_id, at, at FROM {staged} WHERE true "
        "ORDER BY customer_id, account_id ON CONFLICT (customer_id, account_id) "
        f"DO UPDATE SET grouped_at = GREATEST({AccountMembership._meta.db_table}.grouped_at, "
        "excluded.grouped_at) RETURNING customer_id, xmax = 0",
    )
    customers_touch(customer_id for customer_id, inserted in joined if inserted)


def _name(traits: dict, current: str = "") -> str:
    name = traits.get("name")
    return name[:200] if isinstance(name, str) and name else current


def _accounts_locked(external_ids: list[str]) -> dict[str, tuple[int, dict, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT external_id, id, traits, name FROM {Account._meta.db_table} "  # noqa: S608
            "WHERE external_id = ANY(%s::text[]) ORDER BY id FOR UPDATE",
            [external_ids],
        )
        return {
            external_id: (pk, _TRAITS.from_db_value(traits, None, connection), name)
            for external_id, pk, traits, name in cursor.fetchall()
        }
