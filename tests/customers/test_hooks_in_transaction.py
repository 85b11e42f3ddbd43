"""The ingest hook's in-transaction listeners: they run before the commit,
see the events being stored, and an error there fails the whole ingest."""

from datetime import UTC, datetime

import pytest
from django.db import transaction

from apps.customers import hooks
from apps.customers.models import Event
from apps.customers.schemas import TrackIn
from apps.customers.services import ingest

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def listening():
    added = []

    def add(fn):
        hooks.on_ingest_in_transaction(fn)
        added.append(fn)

    yield add
    for fn in added:
        hooks.remove_listener(fn)


@pytest.mark.django_db(transaction=True)
def test_an_in_transaction_listener_hears_the_call_before_its_commit(listening):
    heard = []

    def listener(*, event_ids, changed_customer_ids, now, source):
        inside = transaction.get_connection().in_atomic_block
        heard.append((inside, Event.objects.filter(pk__in=event_ids).count(), now, source))

    listening(listener)
    result = ingest([TrackIn(userId="u-1", event="signed_up")], received_at=T0)

    assert heard == [(True, 1, T0, "api")]
    assert result.events_stored == 1


@pytest.mark.django_db(transaction=True)
def test_an_error_in_an_in_transaction_listener_stores_nothing(listening):
    def broken(**_):
        raise RuntimeError("the durable work could not be written")

    listening(broken)

    with pytest.raises(RuntimeError):
        ingest([TrackIn(userId="u-1", event="signed_up")], received_at=T0)

    assert not Event.objects.exists()  # the events went with the work: nothing half-written
