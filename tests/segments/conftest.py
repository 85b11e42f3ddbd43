from datetime import datetime

import pytest

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from apps.segments import hooks
from apps.segments.models import Segment


@pytest.fixture
def identify(db):
    """identify("u-1", at=T0, plan="pro") -> the customer's id (created or updated)."""

    def identify(user_id: str, *, at: datetime, **traits) -> int:
        ingest([IdentifyIn(userId=user_id, traits=traits, timestamp=at)], received_at=at)
        return Customer.objects.get(external_id=user_id).pk

    return identify


@pytest.fixture
def track(db):
    """track("u-1", "login", at=T0): one event, through the real ingest path."""

    def track(user_id: str, event: str, *, at: datetime) -> None:
        ingest([TrackIn(userId=user_id, event=event, timestamp=at)], received_at=at)

    return track


@pytest.fixture
def make_segment(db):
    def make(slug: str, definition=None, *, kind: str = Segment.Kind.DYNAMIC, **fields):
        return Segment.objects.create(
            slug=slug, name=fields.pop("name", slug), definition=definition, kind=kind, **fields
        )

    return make


@pytest.fixture
def membership_changes():
    """Every call of the membership hook, as (slug, entered ids, exited ids, now)."""
    calls: list[tuple[str, list[int], list[int], datetime]] = []

    def listener(*, segment, entered_ids, exited_ids, now):
        calls.append((segment.slug, list(entered_ids), list(exited_ids), now))

    hooks.on_membership_change(listener)
    yield calls
    hooks.remove_listener(listener)
