from datetime import UTC, datetime, timedelta

import pytest

from apps.customers.models import Customer
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_an_identify_that_changes_nothing_writes_nothing():
    call = IdentifyIn(userId="u-1", traits={"plan": "pro", "email": "a@example.com"}, timestamp=T0)
    ingest([call], received_at=T0)
    before = Customer.objects.get()

    again = ingest([call], received_at=T0 + timedelta(hours=1))

    after = Customer.objects.get()
    assert again.customers_updated == 0
    assert after.updated_at == before.updated_at


def test_new_customers_are_counted_as_created_not_updated():
    result = ingest(
        [IdentifyIn(userId="u-1", traits={"plan": "pro"}), TrackIn(userId="u-2", event="x")],
        received_at=T0,
    )

    assert (result.customers_created, result.customers_updated) == (2, 0)


def test_a_trait_change_and_a_later_visit_are_both_written():
    ingest([IdentifyIn(userId="u-1", traits={"plan": "starter"}, timestamp=T0)], received_at=T0)
    later = T0 + timedelta(days=2)

    result = ingest(
        [
            IdentifyIn(userId="u-1", traits={"plan": "pro", "phone": "+14155550100"}),
            TrackIn(userId="u-1", event="login", timestamp=later),
        ],
        received_at=T0 + timedelta(days=1),
    )

    customer = Customer.objects.get()
    assert result.customers_updated == 1
    assert customer.traits == {"plan": "pro", "phone": "+14155550100"}
    assert customer.phone == "+14155550100"
    assert customer.last_seen_at == later
    assert customer.updated_at == T0 + timedelta(days=1)


def test_a_null_contact_trait_clears_the_column():
    ingest([IdentifyIn(userId="u-1", traits={"phone": "+14155550100"})], received_at=T0)
    ingest([IdentifyIn(userId="u-1", traits={"phone": None})], received_at=T0)

    customer = Customer.objects.get()
    assert customer.phone == ""
    assert customer.traits == {"phone": None}


def test_new_customers_are_stamped_with_the_batch_time_not_the_wall_clock():
    ingest([TrackIn(userId="u-1", event="x")], received_at=T0)

    assert Customer.objects.get().created_at == T0
