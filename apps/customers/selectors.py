"""Reads of customers and their usage data."""

from django.core.cache import cache
from django.db.models import QuerySet
from django.db.models.fields.json import KT

from .models import Customer, Event

TRAIT_CHOICES_TTL_S = 300


def customer_recent_events(customer: Customer, *, limit: int = 50) -> QuerySet[Event]:
    return customer.events.order_by("-occurred_at", "-id")[:limit]


def trait_values(trait: str, *, limit: int = 50) -> list[str]:
    """The distinct values of a trait (for admin filters), cached: at a million
    customers this is a scan, so it runs at most every few minutes."""
    key = f"tenure:trait-values:{trait}"
    values = cache.get(key)
    if values is None:
        values = sorted(
            v
            for v in Customer.objects.annotate(v=KT(f"traits__{trait}"))
            .exclude(v__isnull=True)
            .values_list("v", flat=True)
            .distinct()[:limit]
            if v not in ("", None)
        )
        cache.set(key, values, TRAIT_CHOICES_TTL_S)
    return values
