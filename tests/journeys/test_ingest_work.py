"""Live ingested data is a row first (apps/journeys/ingest_work.py): written
with the events, published at commit, swept when the broker lost it, and
processed once however often its task runs."""

import json
from datetime import timedelta

import pytest
from django.db import transaction

from apps.customers.models import Event
from apps.journeys.ingest_work import (
    MAX_ATTEMPTS,
    RETRY_BASE_S,
    ingest_work_process,
    ingest_work_record,
    ingest_work_sweep,
)
from apps.journeys.models import Enrollment, IngestWork
from apps.journeys.tasks import process_ingested
from config.celery import app
from tests.brokers import CLOSED_BROKER_URL, broker_at

from .conftest import T0

pytestmark = pytest.mark.django_db

EXIT = [{"id": "done", "type": "exit"}]
SIGNED_UP = {"type": "event", "event": "signed_up"}


@pytest.fixture
def live(make_journey, journey_file):
    def make(trigger: dict = SIGNED_UP, **top):
        top.setdefault("goal", None)
        top.setdefault("reentry", "never")
        top.setdefault("start", "done")
        top.setdefault("nodes", EXIT)
        return make_journey(journey_file(trigger=trigger, **top), at=T0 - timedelta(days=1))

    return make


@pytest.fixture
def empty_broker():
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")


def queued_tasks(queue: str = "default") -> list[tuple[str, list]]:
    """Every task message waiting in the broker's queue (taken off it)."""
    found = []
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args, _kwargs, _embed = json.loads(message.body)
            found.append((message.headers["task"], args))
    return found


def run_queued() -> None:
    """What a worker would do with the queued `process_ingested` tasks."""
    for name, args in queued_tasks():
        assert name == process_ingested.name
        process_ingested(*args)


def test_an_api_event_is_one_row_written_with_it_and_its_id_is_published_at_commit(
    live, api, empty_broker, django_capture_on_commit_callbacks
):
    live()

    with django_capture_on_commit_callbacks(execute=True):
        response = api("track", {"userId": "u-9", "event": "signed_up"})

    assert response.status_code == 200
    work = IngestWork.objects.get()
    assert work.event_ids == [Event.objects.get().pk]
    assert work.published_at is not None
    assert queued_tasks() == [(process_ingested.name, [[work.pk]])]
    assert not Enrollment.objects.exists()  # enrolling is the task's work, not the request's


def test_a_batch_is_one_row_however_many_events_it_stores(
    live, api, empty_broker, django_capture_on_commit_callbacks
):
    live()
    batch = [{"type": "track", "userId": f"u-{n}", "event": "signed_up"} for n in range(5)]

    with django_capture_on_commit_callbacks(execute=True):
        assert api("batch", {"batch": batch}).status_code == 200

    (work,) = IngestWork.objects.all()
    assert sorted(work.event_ids) == sorted(Event.objects.values_list("pk", flat=True))
    run_queued()
    assert Enrollment.objects.count() == 5
    assert not IngestWork.objects.exists()  # done, and gone


def test_backfills_and_systems_without_live_journeys_write_no_row(
    live, api, empty_broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        api("track", {"userId": "u-9", "event": "signed_up"})  # no live journey yet
    live()
    for source in ("import", "demo"):
        with transaction.atomic():
            ingest_work_record(event_ids=[1], changed_customer_ids=[], now=T0, source=source)

    assert not IngestWork.objects.exists()
    assert queued_tasks() == []


def test_an_api_event_sent_while_the_broker_is_down_enrolls_once_when_it_is_back(
    live, api, empty_broker, django_capture_on_commit_callbacks
):
    journey = live()

    with broker_at(CLOSED_BROKER_URL), django_capture_on_commit_callbacks(execute=True):
        response = api("track", {"userId": "u-9", "event": "signed_up"})

    assert response.status_code == 200  # the event is stored: the client must not resend
    work = IngestWork.objects.get()
    assert work.published_at is None  # the publication failed: the sweeper's
    assert not Enrollment.objects.exists()

    # The broker is back: the sweeper's next run publishes it, a worker runs it.
    assert ingest_work_sweep(now=T0) == 1
    tasks = queued_tasks()
    assert tasks == [(process_ingested.name, [[work.pk]])]
    for _ in range(2):  # and again, as if the sweeper had published it twice
        process_ingested(*tasks[0][1])

    assert list(Enrollment.objects.values_list("journey", "customer__external_id")) == [
        (journey.pk, "u-9")
    ]
    assert not IngestWork.objects.exists()
    assert ingest_work_sweep(now=T0 + timedelta(hours=1)) == 0


def test_a_row_processed_twice_enrolls_once_even_when_reentry_is_always(
    live, api, empty_broker, django_capture_on_commit_callbacks
):
    journey = live(reentry="always")
    with django_capture_on_commit_callbacks(execute=True):
        api("track", {"userId": "u-9", "event": "signed_up"})
    (work,) = IngestWork.objects.all()
    Enrollment.objects.filter(journey=journey).delete()

    first = ingest_work_process([work.pk], now=T0)
    # The enrollment ends (an exit node), so only the row's claim stands in
    # the way of a second one.
    Enrollment.objects.update(state=Enrollment.State.COMPLETED)
    second = ingest_work_process([work.pk], now=T0)

    assert (first.enrolled, second.enrolled) == (1, 0)
    assert Enrollment.objects.filter(journey=journey).count() == 1


def test_a_published_row_still_waiting_after_the_bound_is_published_again(
    live, settings, empty_broker
):
    settings.JOURNEY_INGEST_REPUBLISH_AFTER_S = 300
    live()
    work = IngestWork.objects.create(event_ids=[], received_at=T0, published_at=T0)

    assert ingest_work_sweep(now=T0 + timedelta(seconds=299)) == 0
    assert ingest_work_sweep(now=T0 + timedelta(seconds=301)) == 1
    assert queued_tasks() == [(process_ingested.name, [[work.pk]])]
    work.refresh_from_db()
    assert work.published_at == T0 + timedelta(seconds=301)


def test_a_failing_row_is_kept_and_retried_later_then_left_for_review(live, empty_broker):
    live()
    # Stored data the processing cannot read (as an older version might have written).
    work = IngestWork.objects.create(
        changed_customer_ids=[1, "not an id"], received_at=T0, published_at=T0
    )

    ingest_work_process([work.pk], now=T0)

    work.refresh_from_db()
    assert (work.attempts, work.published_at) == (1, None)
    assert work.error
    assert work.retry_after == T0 + timedelta(seconds=RETRY_BASE_S * 2)
    assert ingest_work_sweep(now=T0 + timedelta(seconds=RETRY_BASE_S)) == 0  # not yet
    assert ingest_work_sweep(now=work.retry_after) == 1
    IngestWork.objects.filter(pk=work.pk).update(attempts=MAX_ATTEMPTS, retry_after=None)
    assert ingest_work_sweep(now=T0 + timedelta(days=1)) == 0  # given up, kept with its error


def test_beat_runs_the_ingest_sweeper_on_the_default_queue(settings):
    from apps.journeys.tasks import sweep_ingested
    from config.celery import system_schedule

    entry = system_schedule()["sweep-ingested"]

    assert entry["task"] == sweep_ingested.name
    assert entry["schedule"] == settings.JOURNEY_INGEST_SWEEP_INTERVAL_S
    assert entry["options"]["queue"] == "default"
    assert app.amqp.router.route({}, process_ingested.name)["queue"].name == "default"


def test_rows_published_to_a_broker_that_lost_its_data_are_republished_at_once(
    live, api, own_redis, django_capture_on_commit_callbacks
):
    live()
    with broker_at(own_redis.url):
        assert ingest_work_sweep(now=T0) == 0  # the sweeper's first look at the broker
        with django_capture_on_commit_callbacks(execute=True):
            api("track", {"userId": "u-9", "event": "signed_up"})
        assert own_redis.queued() == 1
        assert ingest_work_sweep(now=T0) == 0  # published a moment ago, and still queued

        own_redis.kill()  # Redis restarts without persistence: the task is gone
        own_redis.start()
        assert own_redis.queued() == 0

        assert ingest_work_sweep(now=T0) == 1  # at once, not JOURNEY_INGEST_REPUBLISH_AFTER_S on
        assert own_redis.queued() == 1
        assert ingest_work_sweep(now=T0) == 0  # the broker kept it this time


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("other_run", "enrolled"), [("commit", 0), ("rollback", 1)])
def test_a_run_waits_for_a_concurrent_claim_of_its_row_and_enrolls_only_if_that_failed(
    live, api, empty_broker, other_run, enrolled
):
    import threading

    import psycopg
    from django.db import connection

    journey = live(reentry="always")
    api("track", {"userId": "u-9", "event": "signed_up"})  # commits: the row is published
    (work,) = IngestWork.objects.all()
    queued_tasks()
    s = connection.settings_dict
    dsn = f"host={s['HOST']} port={s['PORT'] or 5432} dbname={s['NAME']} user={s['USER']}"
    results = []

    with psycopg.connect(dsn) as other:
        # Another run has claimed the row (deleted it) and not yet committed.
        table = IngestWork._meta.db_table
        other.execute(f"DELETE FROM {table} WHERE id = %s", [work.pk])  # noqa: S608
        run = threading.Thread(
            target=lambda: results.append(ingest_work_process([work.pk], now=T0).enrolled)
        )
        run.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with psycopg.connect(dsn, autocommit=True) as watcher:
            for _ in range(100):
                if watcher.execute(waiting).fetchone()[0]:
                    break
                threading.Event().wait(0.05)
            else:
                pytest.fail("the second run never waited on the first one's claim")
        getattr(other, other_run)()
        run.join(timeout=10)

    assert results == [enrolled]
    assert Enrollment.objects.filter(journey=journey).count() == enrolled
    assert not IngestWork.objects.exists()


def test_rows_left_for_review_are_listed_in_the_admin_with_their_error(admin_client):
    from django.urls import reverse

    IngestWork.objects.create(
        received_at=T0, attempts=MAX_ATTEMPTS, error="TypeError: the stored ids are not ids"
    )

    response = admin_client.get(reverse("admin:journeys_ingestwork_changelist"))

    assert response.status_code == 200
    assert "the stored ids are not ids" in response.content.decode()
