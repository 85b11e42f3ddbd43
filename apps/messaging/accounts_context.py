"""What templates see of a customer's accounts (Segment's `group` call):
`account`, the most recently grouped one, and `accounts`, all of them, most
recent first (docs/templates.md).

Each account is plain data like `customer`: every trait of the account, then
its `name`, `external_id` (the group id; `id` too) and `traits` (the traits
alone, `account.traits.plan`), and when the customer was last grouped with
it (`grouped_at`). A customer in no account has an empty `account`: `{% if
account %}` is false, and `{{ account.name }}` fails naming it unless the
template gives a `default`.

The accounts are read only for templates that name them, with one query per
customer, or one for a whole batch of sends (`accounts_prefetch`).
"""

from collections.abc import Iterable

from django.db.models import Prefetch, prefetch_related_objects

from apps.customers.models import AccountMembership, Customer

ACCOUNT_NAMES = frozenset({"account", "accounts"})

_MEMBERSHIPS = Prefetch(
    "account_memberships",
    queryset=AccountMembership.objects.select_related("account").order_by("-grouped_at", "-id"),
)

SAMPLE_ACCOUNT = {
    "name": "Sample Inc.",
    "external_id": "sample-inc",
    "id": "sample-inc",
    "traits": {"name": "Sample Inc.", "plan": "enterprise"},
    "plan": "enterprise",
}


def accounts_prefetch(customers: Iterable[Customer]) -> None:
    """Read the accounts of these customers in one query (those already read
    are skipped), for a batch of renders."""
    customers = [c for c in customers if c.pk is not None]
    if customers:
        prefetch_related_objects(customers, _MEMBERSHIPS)


def account_data(membership: AccountMembership) -> dict:
    account = membership.account
    traits = account.traits if isinstance(account.traits, dict) else {}
    return {
        **traits,
        "name": account.name,
        "external_id": account.external_id,
        "id": account.external_id,
        "traits": traits,
        "grouped_at": membership.grouped_at,
    }


def accounts_context(customer: Customer) -> dict:
    """`account` and `accounts` for this customer."""
    if customer.pk is None or customer._state.adding:
        accounts = []  # not stored (a sample): in no account
    else:
        accounts_prefetch([customer])
        memberships = sorted(
            customer.account_memberships.all(), key=lambda m: (m.grouped_at, m.pk), reverse=True
        )
        accounts = [account_data(m) for m in memberships]
    return {"account": accounts[0] if accounts else {}, "accounts": accounts}
