"""The Celery app: JSON only, late acks, one task at a time per process,
bounded run time, three queues, and the system's periodic schedule declared
here in code. Beat runs django-celery-beat's DatabaseScheduler, which copies
this schedule into the admin's "Periodic tasks" when it starts.
"""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tenure")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("default", "delivery", "tracking")


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**_) -> None:
    """Around each task, what Django does around each request: close a
    connection past CONN_MAX_AGE or after an error, and check a kept one's
    health before its next use (CELERY_DB_REUSE_MAX keeps Celery from closing
    them all)."""
    from django.db import close_old_connections

    close_old_connections()


def system_schedule() -> dict:
    """Each periodic task the system relies on, by name. Later parts add theirs
    (segment refresh, engine tick, delivery sweeper) here, never as ad-hoc rows."""
    from django.conf import settings

    return {
        # Claims due journey enrollments and fans them out to workers. Ticks
        # may overlap safely (disjoint claims); a late one is dropped.
        "engine-tick": {
            "task": "apps.journeys.tasks.tick",
            "schedule": float(settings.ENGINE_TICK_INTERVAL_S),
            "options": {"queue": "default", "expires": settings.ENGINE_TICK_INTERVAL_S * 2},
        },
        # Date-trait and schedule triggers (each fire a unique row: never twice).
        "journey-triggers": {
            "task": "apps.journeys.tasks.check_triggers",
            "schedule": float(settings.JOURNEY_TRIGGER_CHECK_INTERVAL_S),
            "options": {"queue": "default", "expires": settings.JOURNEY_TRIGGER_CHECK_INTERVAL_S},
        },
        # Live ingested data whose task the broker lost or never took
        # (apps/journeys/ingest_work.py): a row first, republished here.
        "sweep-ingested": {
            "task": "apps.journeys.tasks.sweep_ingested",
            "schedule": float(settings.JOURNEY_INGEST_SWEEP_INTERVAL_S),
            "options": {
                "queue": "default",
                "expires": settings.JOURNEY_INGEST_SWEEP_INTERVAL_S * 2,
            },
        },
        # Anonymous visitors past ANONYMOUS_PROFILE_TTL_DAYS, with their events.
        "expire-anonymous": {
            "task": "apps.customers.tasks.expire_anonymous",
            "schedule": 3600.0,
            "options": {"queue": "default", "expires": 3600},
        },
        "heartbeat": {
            "task": "apps.core.tasks.heartbeat",
            "schedule": float(settings.HEARTBEAT_INTERVAL_S),
            "options": {"queue": "default", "expires": settings.HEARTBEAT_INTERVAL_S * 2},
        },
        # Also takes the daily size snapshots (today's row is upserted by each run).
        "refresh-segments": {
            "task": "apps.segments.tasks.refresh_segments",
            "schedule": 60.0,
            # A tick still queued when the next one is due is dropped, not piled up.
            "options": {"queue": "default", "expires": 60},
        },
        # Expires stale sending leases and publishes due messages (retries,
        # deferrals, lost publishes). On `default`, so a delivery backlog never
        # holds it up; a missed tick is dropped, the next one catches up.
        "sweep-deliveries": {
            "task": "apps.messaging.tasks.sweep_deliveries",
            "schedule": float(settings.DELIVERY_SWEEP_INTERVAL_S),
            "options": {"queue": "default", "expires": settings.DELIVERY_SWEEP_INTERVAL_S * 2},
        },
        # Opens, clicks and provider events waiting to be processed (webhooks
        # also publish it at once; this catches up on the pixel and lost publishes).
        "process-tracking": {
            "task": "apps.tracking.tasks.process_tracking",
            "schedule": float(settings.TRACKING_PROCESS_INTERVAL_S),
            "options": {"queue": "tracking", "expires": settings.TRACKING_PROCESS_INTERVAL_S * 2},
        },
    }


app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="default",
    task_queues=[Queue(name) for name in QUEUES],
    task_routes={
        "apps.messaging.tasks.*": {"queue": "delivery"},
        "apps.tracking.tasks.*": {"queue": "tracking"},
    },
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    timezone="UTC",
    enable_utc=True,
)
app.autodiscover_tasks()


@app.on_after_configure.connect
def _install_system_schedule(sender: Celery, **kwargs) -> None:
    sender.conf.beat_schedule = system_schedule()
