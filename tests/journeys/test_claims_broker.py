"""Claims whose tasks the broker refused or lost are taken again by the next
tick, not ENGINE_LEASE_S later (and do not hold the backpressure budget)."""

from datetime import timedelta

import pytest

from apps.journeys.engine import engine_tick
from apps.journeys.enrollment import enrollments_start
from apps.journeys.models import Enrollment
from tests.brokers import CLOSED_BROKER_URL, broker_at

from .conftest import T0

pytestmark = pytest.mark.django_db


@pytest.fixture
def due(make_journey, sendable, make_customers):
    def make(n: int) -> list[int]:
        journey = make_journey()
        enrollments_start(journey=journey, customer_ids=[c.pk for c in make_customers(n)], now=T0)
        return sorted(Enrollment.objects.values_list("pk", flat=True))

    return make


def test_claims_whose_publication_failed_are_claimed_again_by_the_next_tick(
    due, settings, django_capture_on_commit_callbacks
):
    settings.ENGINE_LEASE_S = 600
    ids = due(3)

    with broker_at(CLOSED_BROKER_URL), django_capture_on_commit_callbacks(execute=True):
        down = engine_tick(now=T0)
    assert down.claimed == 3
    assert set(Enrollment.objects.values_list("lease_until", flat=True)) == {T0}  # released

    published: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        back = engine_tick(now=T0 + timedelta(seconds=5), publish=published.append)

    assert back.outstanding == 0
    assert sorted(i for chunk in published for i in chunk) == ids


def test_claims_published_to_a_broker_that_lost_its_data_are_claimed_again_at_once(
    due, settings, own_redis, django_capture_on_commit_callbacks
):
    settings.ENGINE_LEASE_S = 600
    ids = due(3)
    later = T0 + timedelta(seconds=5)
    with broker_at(own_redis.url):
        with django_capture_on_commit_callbacks(execute=True):
            assert engine_tick(now=T0).claimed == 3  # also the tick's first look at the broker
        assert own_redis.queued() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert engine_tick(now=later).outstanding == 3  # the broker kept them: they wait

        own_redis.kill()  # Redis restarts without persistence: the task is gone
        own_redis.start()

        with django_capture_on_commit_callbacks(execute=True):
            after = engine_tick(now=later + timedelta(seconds=5))
        assert own_redis.queued() == 1  # published again

    assert (after.outstanding, after.claimed) == (0, 3)
    tokens = set(Enrollment.objects.filter(pk__in=ids).values_list("lease_token", flat=True))
    assert len(tokens) == 1 and "" not in tokens  # all three, by the new claim
