"""Reads of customers and their usage data."""

from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Length

from .models import Account, AccountMembership, Customer, Event

TRAIT_CHOICES_TTL_S = 300
TRAIT_CHOICE_MAX_LENGTH = 100


def customer_search(queryset: QuerySet[Customer], term: str) -> QuerySet[Customer]:
    """Exact external id, anonymous id or phone, or email in any case, and
    the customer a profile with that id was merged into: each side of the OR
    has its own index (the merged profiles' customers are looked up first,
    as ids), so this stays an index lookup at millions of rows."""
    term = term.strip()
    if not term:
        return queryset
    became = list(
        Customer.objects.filter(Q(external_id=term) | Q(anonymous_id=term))
        .filter(merged_into__isnull=False)
        .values_list("merged_into_id", flat=True)
    )
    return queryset.filter(
        Q(external_id=term)
        | Q(anonymous_id=term)
        | Q(phone=term)
        | Q(email__iexact=term)
        | Q(pk__in=became)
    )


def account_search(queryset: QuerySet[Account], term: str) -> QuerySet[Account]:
    """Exact group id, part of the name (case-insensitive: a scan of the
    accounts, far fewer than customers), or the accounts of the customer
    with this exact external id."""
    term = term.strip()
    if not term:
        return queryset
    member = AccountMembership.objects.filter(customer__external_id=term).values("account_id")
    return queryset.filter(Q(external_id=term) | Q(name__icontains=term) | Q(pk__in=member))


def event_search(queryset: QuerySet[Event], term: str) -> QuerySet[Event]:
    """Exact customer external id, event name or message id, each indexed."""
    term = term.strip()
    if not term:
        return queryset
    return queryset.filter(Q(customer__external_id=term) | Q(name=term) | Q(message_id=term))


def customer_recent_events(customer: Customer, *, limit: int = 50) -> QuerySet[Event]:
    return customer.events.order_by("-occurred_at", "-id")[:limit]


def trait_values(trait: str, *, limit: int = 50) -> list[str]:
    """The distinct values of a trait (for admin filters), cached: at a million
    customers this is a scan, so it runs at most every few minutes."""
    key = f"tenure:trait-values:{trait}"
    values = cache.get(key)
    if values is None:
        # Short values only: a filter choice is a link, and a trait an older
        # version stored may be megabytes long.
        values = sorted(
            v
            for v in Customer.objects.annotate(v=KT(f"traits__{trait}"))
            .exclude(v__isnull=True)
            .annotate(n=Length("v"))
            .filter(n__lte=TRAIT_CHOICE_MAX_LENGTH)
            .values_list("v", flat=True)
            .distinct()[:limit]
            if v not in ("", None)
        )
        cache.set(key, values, TRAIT_CHOICES_TTL_S)
    return values


def customer_by_user_id(user_id: str) -> Customer | None:
    """The customer a user id names now: a profile merged into another (an
    `alias` from an old id) resolves to the customer it became."""
    customer = Customer.objects.filter(external_id=user_id).first()
    while customer is not None and customer.merged_into_id is not None:
        customer = Customer.objects.filter(pk=customer.merged_into_id).first()
    return customer
