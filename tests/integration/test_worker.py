import time

from celery.signals import task_postrun
from django.db import connection
from django.utils import timezone

from apps.core.health import heartbeat_last
from apps.core.tasks import heartbeat
from apps.messaging.tasks import sweep_deliveries
from tests.integration.conftest import wait_for


def test_a_real_worker_consumes_a_task_published_to_the_broker(celery_worker_process, client):
    sent_at = timezone.now()

    heartbeat.delay()

    beat = wait_for(lambda: (last := heartbeat_last()) and last >= sent_at and last)
    assert sent_at <= beat <= timezone.now()
    assert client.get("/healthz").json()["worker"]["last_heartbeat"] == beat.isoformat()
    assert "apps.core.tasks.heartbeat" in celery_worker_process.log_path.read_text()


def _succeeded(worker, task: str) -> int:
    text = worker.log_path.read_text()
    return sum(1 for line in text.splitlines() if f"{task}[" in line and "succeeded" in line)


def test_a_worker_process_keeps_its_database_connection_between_tasks(celery_worker_process):
    """Celery's Django fixup would close it after every task (a new
    PostgreSQL backend for each); CELERY_DB_REUSE_MAX keeps it."""

    def worker_backends() -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return {pid for (pid,) in cursor.fetchall()}

    seen = []
    for done in range(1, 4):
        sweep_deliveries.delay()  # reads the messages table
        wait_for(lambda done=done: _succeeded(celery_worker_process, "sweep_deliveries") == done)
        seen.append(worker_backends())

    # The same server process was there after each task (one that was only
    # passing through, as another test's worker leaving, would not be).
    assert seen[0] & seen[1] & seen[2]


def test_a_task_closes_a_connection_past_its_max_age(transactional_db):
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1

    task_postrun.send(sender=heartbeat)

    assert connection.connection is None
