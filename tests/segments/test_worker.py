"""Beat's segment refresh through the broker and a real Celery worker: the
fan-out task publishes one refresh per segment, and the worker runs them."""

from datetime import UTC, datetime, timedelta

from apps.segments import tasks
from apps.segments.models import Segment, SegmentMembership
from tests.integration.conftest import celery_worker_process, wait_for  # noqa: F401 - a fixture

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DORMANT = {"event": "login", "op": "not_since", "days": 14}
PRO = {"trait": "plan", "op": "eq", "value": "pro"}


def test_a_real_worker_refreshes_each_segment_published_by_the_beat_task(
    celery_worker_process,  # noqa: F811
    identify,
    track,
    make_segment,
):
    pro = identify("u-pro", at=T0, plan="pro")
    track("u-pro", "login", at=T0)
    dormant = identify("u-dormant", at=T0 - timedelta(days=30), plan="free")
    segments = [make_segment("dormant", DORMANT), make_segment("pro", PRO)]
    at = T0 + timedelta(days=1)

    tasks.refresh_segments.delay(at.isoformat())

    wait_for(lambda: Segment.objects.filter(refreshed_at=at).count() == 2)
    open_stays = SegmentMembership.objects.filter(exited_at__isnull=True, entered_at=at)
    assert sorted(open_stays.values_list("segment__slug", "customer_id")) == [
        ("dormant", dormant),
        ("pro", pro),
    ]
    assert all(not s.last_error for s in Segment.objects.filter(pk__in=[s.pk for s in segments]))
    log = celery_worker_process.log_path.read_text()
    assert log.count("apps.segments.tasks.refresh_segment[") >= 2
