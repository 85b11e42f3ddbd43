"""Liveness of the parts Tenure cannot work without (database, broker,
cache), and the freshness of the worker heartbeat, for `/healthz`.

The answer is 503 when the database, the broker or the cache does not answer:
this web process cannot do its work, and a load balancer should send the
request elsewhere. A worker whose heartbeat is missing or older than
HEARTBEAT_MAX_AGE_S is reported (`worker.status`, and `status: degraded`) but
answers 200 unless the check is `strict` (`/healthz?strict=1`, for monitors
that page someone): the web processes still take API calls, whose work is
written as rows and waits for a worker, so taking them out of rotation
because the workers are restarting would turn a delay into an outage and
make every client retry. A new install whose worker has not checked in yet
is `degraded` too: no worker has proved it runs.

The database is PostgreSQL either way; `database.server` says which one:
`embedded` (the data folder's own, config/embedded_postgres.py) or
`configured` (the one DATABASE_URL names).
"""

import secrets
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from kombu import Connection

HEARTBEAT_CACHE_KEY = "tenure:heartbeat"
PROBE_CACHE_KEY = "tenure:healthz-probe"


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def check_database() -> str | None:
    """None when a query round-trips, else the error."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return _error(exc)
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
        return _error(exc)
    return None


def check_cache() -> str | None:
    """None when the cache keeps a value and gives it back, else the error.
    The rate limits, the heartbeat and the tracking fast path live there."""
    token = secrets.token_hex(8)
    try:
        cache.set(PROBE_CACHE_KEY, token, timeout=60)
        if cache.get(PROBE_CACHE_KEY) != token:
            return "the cache did not give back what it was given"
    except Exception as exc:
        return _error(exc)
    return None


def heartbeat_record(*, now: datetime) -> None:
    cache.set(HEARTBEAT_CACHE_KEY, now.isoformat(), timeout=None)


def heartbeat_last() -> datetime | None:
    value = cache.get(HEARTBEAT_CACHE_KEY)
    return datetime.fromisoformat(value) if value else None


def worker_report(*, now: datetime, cache_error: str | None) -> dict:
    """The worker's heartbeat: `ok` within HEARTBEAT_MAX_AGE_S, `late` past
    it, `missing` when none was ever recorded, `unknown` when the cache (where
    it is kept) cannot be read."""
    bound = settings.HEARTBEAT_MAX_AGE_S
    if cache_error:
        return {"status": "unknown", "last_heartbeat": None, "age_s": None, "max_age_s": bound}
    try:
        last = heartbeat_last()
    except Exception as exc:
        return {"status": "unknown", "error": _error(exc), "last_heartbeat": None, "age_s": None,
                "max_age_s": bound}  # fmt: skip
    if last is None:
        return {"status": "missing", "last_heartbeat": None, "age_s": None, "max_age_s": bound}
    age = (now - last).total_seconds()
    return {
        "status": "ok" if age <= bound else "late",
        "last_heartbeat": last.isoformat(),
        "age_s": round(age, 1),
        "max_age_s": bound,
    }


def health_report(
    *, now: datetime, broker_url: str | None = None, strict: bool = False
) -> tuple[bool, dict]:
    """(healthy, report): see the module's docstring. `status` is `ok`,
    `degraded` (only the worker is unhealthy) or `unavailable`."""
    errors = {
        "database": check_database(),
        "broker": check_broker(broker_url),
        "cache": check_cache(),
    }
    report: dict = {}
    for part, error in errors.items():
        report[part] = {"status": "ok"} if error is None else {"status": "error", "error": error}
    report["database"]["server"] = "embedded" if settings.DATABASE_EMBEDDED else "configured"
    report["worker"] = worker_report(now=now, cache_error=errors["cache"])
    down = [part for part, error in errors.items() if error]
    # Unknown (the cache is down, and reported as such) is not a worker down.
    worker_ok = report["worker"]["status"] in ("ok", "unknown")
    status = "unavailable" if down else "ok" if worker_ok else "degraded"
    report = {"status": status, **report}
    if down or not worker_ok:
        report["down"] = down + ([] if worker_ok else ["worker"])
    return not down and (worker_ok or not strict), report
