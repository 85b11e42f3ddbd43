from django.utils import timezone

from apps.core.health import heartbeat_last
from apps.core.tasks import heartbeat
from tests.integration.conftest import wait_for


def test_a_real_worker_consumes_a_task_published_to_the_broker(celery_worker_process, client):
    sent_at = timezone.now()

    heartbeat.delay()

    beat = wait_for(lambda: (last := heartbeat_last()) and last >= sent_at and last)
    assert sent_at <= beat <= timezone.now()
    assert client.get("/healthz").json()["worker"]["last_heartbeat"] == beat.isoformat()
    assert "apps.core.tasks.heartbeat" in celery_worker_process.log_path.read_text()
