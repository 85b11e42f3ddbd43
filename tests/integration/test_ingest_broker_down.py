"""RELIABILITY.md 28 for real: a `signed_up` accepted by the API while the
broker is down stays a row, and once the broker is back the sweeper's run
has a real worker enroll the customer, once."""

from django.utils import timezone

from apps.journeys.ingest_work import ingest_work_sweep
from apps.journeys.models import Enrollment, IngestWork
from apps.journeys.services import journey_import
from tests.brokers import CLOSED_BROKER_URL, broker_at
from tests.integration.conftest import wait_for

JOURNEY = {
    "slug": "welcome",
    "name": "Welcome",
    "trigger": {"type": "event", "event": "signed_up"},
    "reentry": {"policy": "always"},
    "start": "done",
    "nodes": [{"id": "done", "type": "exit"}],
}


def test_an_event_accepted_while_the_broker_was_down_enrolls_once_through_a_real_worker(
    celery_worker_process, api
):
    journey = journey_import(JOURNEY, now=timezone.now(), publish=True)

    with broker_at(CLOSED_BROKER_URL):
        response = api("track", {"userId": "u-42", "event": "signed_up"})

    assert response.status_code == 200
    (work,) = IngestWork.objects.all()
    assert work.published_at is None  # the broker refused it: the sweeper's
    assert not Enrollment.objects.exists()

    # The broker is back: beat's next sweep publishes the row, the worker runs it.
    assert ingest_work_sweep(now=timezone.now()) == 1
    wait_for(lambda: not IngestWork.objects.exists())
    # A second publication of the same row (a sweep racing the task) changes nothing.
    from apps.journeys.tasks import process_ingested

    process_ingested.delay([work.pk])
    wait_for(lambda: celery_worker_process.log_path.read_text().count("process_ingested") >= 4)

    assert list(Enrollment.objects.values_list("journey", "customer__external_id")) == [
        (journey.pk, "u-42")
    ]
    assert ingest_work_sweep(now=timezone.now()) == 0
