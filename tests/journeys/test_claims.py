"""Exactly once: ticks and workers that overlap, repeat or race claim
disjoint enrollments and record every step and message once
(RELIABILITY.md 8)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction

from apps.journeys.engine import engine_tick, enrollments_advance
from apps.journeys.engine.tick import _claim, _outstanding, _outstanding_query
from apps.journeys.enrollment import enrollments_start
from apps.journeys.models import Enrollment, EnrollmentStep
from apps.messaging.models import Message

from .conftest import T0

DAY = timedelta(days=1)


@pytest.fixture
def due(make_journey, sendable, make_customers):
    """due(n) -> ids of n enrollments due at T0 in the onboarding journey
    (welcome email, then a two-day wait)."""

    def make(n: int) -> list[int]:
        journey = make_journey()
        enrollments_start(journey=journey, customer_ids=[c.pk for c in make_customers(n)], now=T0)
        return sorted(Enrollment.objects.values_list("pk", flat=True))

    return make


def claimed_by(publish_log: list[list[int]]) -> list[int]:
    return sorted(i for chunk in publish_log for i in chunk)


@pytest.mark.django_db
def test_the_same_tick_twice_claims_nothing_the_second_time(
    due, django_capture_on_commit_callbacks
):
    ids = due(5)
    first: list[list[int]] = []
    second: list[list[int]] = []

    with django_capture_on_commit_callbacks(execute=True):
        engine_tick(now=T0, publish=first.append)
        engine_tick(now=T0, publish=second.append)

    assert claimed_by(first) == ids
    assert second == []


@pytest.mark.django_db
def test_advancing_the_same_chunk_twice_sends_once_and_records_each_step_once(due):
    ids = due(3)

    once = enrollments_advance(ids, now=T0)
    twice = enrollments_advance(ids, now=T0)
    later = enrollments_advance(ids, now=T0 + timedelta(hours=1))

    assert (once.advanced, twice.advanced, later.advanced) == (3, 0, 0)
    assert Message.objects.count() == 3
    assert EnrollmentStep.objects.count() == 6  # welcome + wait1, each once
    assert sorted(Message.objects.values_list("idempotency_key", flat=True)) == sorted(
        f"enr:{i}:welcome:1" for i in ids
    )


@pytest.mark.django_db
def test_a_rerun_after_the_visit_was_recorded_finds_the_message_and_sends_nothing_new(
    due, steps_of
):
    """A crash after the message was written but before the enrollment moved
    is a rollback of both; a rerun of the same visit that finds the message
    (a key already used) records it instead of sending again."""
    (enrollment_id,) = due(1)
    enrollments_advance([enrollment_id], now=T0)
    message = Message.objects.get()
    # Put the enrollment back before the welcome node, as a stale worker would see it.
    EnrollmentStep.objects.all().delete()
    Enrollment.objects.filter(pk=enrollment_id).update(
        current_node="welcome", next_run_at=T0, context={"visits": {"welcome": 1}}
    )

    enrollments_advance([enrollment_id], now=T0)

    assert Message.objects.get() == message
    assert EnrollmentStep.objects.get(node_id="welcome").message == message


def _in_threads(*targets):
    """Run the callables at once (released together), each on its own
    database connection; re-raise the first error."""
    start = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def run(target):
        try:
            start.wait(timeout=10)
            target()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_claim_disjoint_enrollments(due, settings):
    settings.ENGINE_CLAIM_BATCH = 7
    ids = due(60)
    logs: list[list[list[int]]] = [[], []]

    def tick(log):
        return lambda: engine_tick(now=T0, publish=log.append)

    _in_threads(tick(logs[0]), tick(logs[1]))

    a, b = claimed_by(logs[0]), claimed_by(logs[1])
    assert set(a).isdisjoint(b)
    assert sorted(a + b) == ids


@pytest.mark.django_db(transaction=True)
def test_two_workers_claim_disjoint_rows_and_advance_each_once(due, settings):
    settings.ENGINE_CLAIM_BATCH = 5
    settings.ENGINE_MAX_PER_TICK = 10
    settings.ENGINE_CHUNK_SIZE = 5
    ids = due(80)
    logs: list[list[list[int]]] = [[], []]

    def worker(log):
        def work():
            # A worker that ticks and advances what it claimed, until nothing is due.
            while True:
                before = len(log)
                if not engine_tick(now=T0, publish=log.append).claimed:
                    break
                for chunk in log[before:]:
                    enrollments_advance(chunk, now=T0)

        return work

    _in_threads(worker(logs[0]), worker(logs[1]))

    a, b = claimed_by(logs[0]), claimed_by(logs[1])
    assert set(a).isdisjoint(b)
    assert sorted(a + b) == ids
    assert a and b  # both took part
    assert Message.objects.count() == 80
    assert EnrollmentStep.objects.filter(node_id="welcome").count() == 80
    assert set(Enrollment.objects.values_list("current_node", flat=True)) == {"wait1"}


@pytest.mark.django_db(transaction=True)
def test_a_claim_skips_rows_another_tick_has_locked_instead_of_waiting(due):
    ids = due(10)
    locked = threading.Event()
    release = threading.Event()
    first: list[int] = []

    def slow_tick():
        with transaction.atomic():
            first.extend(_claim(now=T0, limit=4, token="slow"))
            locked.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=lambda: (slow_tick(), connection.close()))
    thread.start()
    assert locked.wait(timeout=30)
    try:
        with transaction.atomic():
            second = _claim(now=T0, limit=100, token="fast")
    finally:
        release.set()
        thread.join(timeout=30)

    assert len(first) == 4
    assert sorted(first + second) == ids


@pytest.mark.django_db(transaction=True)
def test_two_workers_advancing_the_same_chunk_at_once_send_each_message_once(due):
    ids = due(40)

    _in_threads(lambda: enrollments_advance(ids, now=T0), lambda: enrollments_advance(ids, now=T0))

    assert Message.objects.count() == 40
    assert EnrollmentStep.objects.count() == 80
    assert not Enrollment.objects.exclude(current_node="wait1").exists()


@pytest.mark.django_db
def test_the_outstanding_count_reads_the_claimed_enrollments_not_the_due_backlog(due):
    """The tick's count of claims still waiting for a worker can be answered
    from the claimed index alone (its predicate is implied by the query), so
    it costs what is claimed, not what is due."""
    due(300)
    _claim(now=T0, limit=2, token="tick")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Enrollment._meta.db_table}")
        query = _outstanding_query(now=T0)
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "enrollment_claimed" in plan
    assert _outstanding(now=T0) == 2
