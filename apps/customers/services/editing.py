"""Edits made by hand, in the admin."""

from collections.abc import Iterable

from ..models import CONTACT_FIELDS, Customer


def customer_save(customer: Customer, *, changed: Iterable[str]) -> None:
    """Save an edit made by hand: a contact column that changed is written to
    the matching trait too, as identify does."""
    for column in CONTACT_FIELDS:
        if column in changed:
            customer.traits = {**customer.traits, column: getattr(customer, column)}
    customer.save()
