"""Liveness of the parts Tenure cannot work without (database, broker), and
the freshness of the worker heartbeat, for `/healthz`."""

from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from kombu import Connection

HEARTBEAT_CACHE_KEY = "tenure:heartbeat"


def check_database() -> str | None:
    """None when a query round-trips, else the error."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def check_broker(url: str | None = None) -> str | None:
    """None when the broker accepts a connection, else the error."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_S
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    options.setdefault("socket_connect_timeout", timeout)
    options.setdefault("socket_timeout", timeout)
    try:
        with Connection(
            url or settings.CELERY_BROKER_URL, connect_timeout=timeout, transport_options=options
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
            conn.default_channel  # noqa: B018 - opening a channel is the real check
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def heartbeat_record(*, now: datetime) -> None:
    cache.set(HEARTBEAT_CACHE_KEY, now.isoformat(), timeout=None)


def heartbeat_last() -> datetime | None:
    value = cache.get(HEARTBEAT_CACHE_KEY)
    return datetime.fromisoformat(value) if value else None


def health_report(*, now: datetime, broker_url: str | None = None) -> tuple[bool, dict]:
    """(healthy, report). Healthy means the database and the broker answer; the
    worker heartbeat is reported for operators but does not fail the check, so
    a web process is not taken out of rotation because workers are restarting."""
    db_error = check_database()
    broker_error = check_broker(broker_url)
    last = heartbeat_last()
    report = {
        "status": "ok" if not (db_error or broker_error) else "unavailable",
        "database": {"status": "ok" if not db_error else "error", "vendor": connection.vendor},
        "broker": {"status": "ok" if not broker_error else "error"},
        "worker": {
            "last_heartbeat": last.isoformat() if last else None,
            "age_s": round((now - last).total_seconds(), 1) if last else None,
        },
    }
    if db_error:
        report["database"]["error"] = db_error
    if broker_error:
        report["broker"]["error"] = broker_error
    return not (db_error or broker_error), report
