import pytest
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from config.celery import app, system_schedule


@pytest.mark.django_db(transaction=True)  # the scheduler manages its own connection
def test_the_system_schedule_declared_in_code_appears_as_periodic_tasks():
    DatabaseScheduler(app=app)  # what `celery beat` does when it starts

    tasks = {t.name: t for t in PeriodicTask.objects.all()}
    assert set(system_schedule()) <= set(tasks)
    assert tasks["heartbeat"].task == "apps.core.tasks.heartbeat"
    assert tasks["heartbeat"].enabled


def test_tasks_are_routed_to_their_queues():
    router = app.amqp.router
    assert router.route({}, "apps.messaging.tasks.deliver")["queue"].name == "delivery"
    assert router.route({}, "apps.tracking.tasks.record_open")["queue"].name == "tracking"
    assert router.route({}, "apps.core.tasks.heartbeat")["queue"].name == "default"
