import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from apps.customers.models import Customer, Event, EventStat
from apps.customers.schemas import IdentifyIn, TrackIn
from apps.customers.services import ingest
from tests.conftest import stats_mismatches

BASE = datetime(2026, 10, 1, tzinfo=UTC)


def random_calls(rng: random.Random, n: int, *, id_space: int) -> list:
    """Identify and track calls over 12 customers that may not exist yet, some
    with message ids that other batches (and writers) repeat."""
    calls = []
    for _ in range(n):
        user = f"u-{rng.randrange(12)}"
        if rng.random() < 0.1:
            calls.append(IdentifyIn(userId=user, traits={"plan": rng.choice(["a", "b"])}))
            continue
        message_id = f"m-{rng.randrange(id_space)}" if rng.random() < 0.7 else None
        calls.append(
            TrackIn(
                userId=user,
                event=rng.choice(["login", "feature_used", "signed_up"]),
                timestamp=BASE + timedelta(minutes=rng.randrange(60 * 24 * 30)),
                messageId=message_id,
            )
        )
    return calls


@pytest.mark.django_db
def test_event_stats_equal_the_event_aggregate_after_mixed_batches_with_duplicates():
    rng = random.Random(7)
    for _ in range(20):
        ingest(random_calls(rng, 60, id_space=400), received_at=BASE)

    assert Event.objects.count() > 500
    assert stats_mismatches() == []


@pytest.mark.django_db
def test_ingest_reports_what_it_stored_and_what_was_already_there():
    calls = [
        TrackIn(userId="u-1", event="login", messageId="a"),
        TrackIn(userId="u-1", event="login", messageId="a"),
        TrackIn(userId="u-2", event="login"),
    ]

    first = ingest(calls, received_at=BASE)
    second = ingest(calls, received_at=BASE)

    assert (first.customers_created, first.events_stored, first.events_duplicate) == (2, 2, 1)
    assert len(first.event_ids) == 2
    assert set(first.event_ids) == set(Event.objects.values_list("id", flat=True)[:2])
    assert (second.customers_created, second.events_stored, second.events_duplicate) == (0, 1, 2)


@pytest.mark.django_db
def test_last_seen_only_moves_forward():
    ingest([TrackIn(userId="u-1", event="x", timestamp=BASE)], received_at=BASE)
    ingest([TrackIn(userId="u-1", event="x", timestamp=BASE - timedelta(days=3))], received_at=BASE)

    assert Customer.objects.get().last_seen_at == BASE


@pytest.mark.django_db
def test_nested_ingests_in_one_transaction_stay_exact():
    """Staged rows of one batch must never leak into the next one."""
    from django.db import transaction

    with transaction.atomic():
        ingest([TrackIn(userId="u-1", event="a", messageId="1")], received_at=BASE)
        ingest([TrackIn(userId="u-1", event="b", messageId="2")], received_at=BASE)

    assert sorted(EventStat.objects.values_list("name", "count")) == [("a", 1), ("b", 1)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_with_overlapping_message_ids_keep_stats_exact():
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(25):
                ingest(random_calls(rng, 40, id_space=300), received_at=BASE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    message_ids = Event.objects.exclude(message_id=None).values_list("message_id", flat=True)
    assert len(message_ids) == len(set(message_ids))
    assert Customer.objects.count() == 12
    assert stats_mismatches() == []
