from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from apps.core.health import heartbeat_last, heartbeat_record
from apps.core.tasks import heartbeat

# A cache on a loopback port nothing listens on: a real connection, refused.
DEAD_CACHE = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:1/0"}
}  # fmt: skip
DEAD_BROKER = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "CELERY_BROKER_TRANSPORT_OPTIONS": {}}


@pytest.fixture
def worker_alive():
    heartbeat()  # the task body, called directly; a real worker runs it in integration


@pytest.mark.django_db
def test_healthz_is_200_ok_when_every_part_answers_and_the_worker_checked_in(client, worker_alive):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok"
    assert body["broker"] == {"status": "ok"}
    assert body["cache"] == {"status": "ok"}
    assert body["worker"]["status"] == "ok"
    assert "down" not in body
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
@pytest.mark.parametrize("embedded,server", [(True, "embedded"), (False, "configured")])
def test_healthz_says_which_postgresql_it_runs_on(client, worker_alive, settings, embedded, server):
    settings.DATABASE_EMBEDDED = embedded

    assert client.get("/healthz").json()["database"]["server"] == server


@pytest.mark.django_db
@override_settings(**DEAD_BROKER)
def test_healthz_is_503_naming_the_broker_when_it_is_down(client, worker_alive):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["broker"]
    assert body["database"]["status"] == "ok"
    assert body["broker"]["status"] == "error"
    assert "Connection refused" in body["broker"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_json_naming_the_cache_when_its_redis_is_down(client):
    with override_settings(CACHES=DEAD_CACHE):
        response = client.get("/healthz")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == ["cache"]
    assert body["cache"]["status"] == "error"
    assert "Connection refused" in body["cache"]["error"]
    # The heartbeat is kept in the cache: not known, rather than an error page.
    assert body["worker"]["status"] == "unknown"


@pytest.mark.django_db
@override_settings(**DEAD_BROKER)
def test_healthz_names_every_part_that_is_down_and_never_answers_500(client):
    with override_settings(CACHES=DEAD_CACHE):
        get, head = client.get("/healthz"), client.head("/healthz")

    assert (get.status_code, head.status_code) == (503, 503)
    assert get.json()["down"] == ["broker", "cache"]


@pytest.fixture
def unreachable_database(transactional_db):
    """Point the default connection at a database that cannot be reached, for
    real: a closed port."""
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(original)


def test_healthz_is_503_naming_the_database_when_it_is_down(client, unreachable_database):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["down"][0] == "database"
    assert body["database"]["status"] == "error"
    assert body["database"]["error"]
    assert body["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_the_heartbeat_task_is_reported_with_its_age(client, worker_alive):
    body = client.get("/healthz").json()

    assert heartbeat_last() <= timezone.now()
    assert body["worker"]["last_heartbeat"] == heartbeat_last().isoformat()
    assert 0 <= body["worker"]["age_s"] < 5


@pytest.mark.django_db
def test_no_heartbeat_yet_is_a_degraded_answer_and_a_503_when_strict(client, settings):
    # A new install whose worker never ran: the web serves, the worker is not proved.
    response = client.get("/healthz")
    strict = client.get("/healthz?strict=1")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["down"] == ["worker"]
    assert body["worker"] == {
        "status": "missing",
        "last_heartbeat": None,
        "age_s": None,
        "max_age_s": settings.HEARTBEAT_MAX_AGE_S,
    }
    assert strict.status_code == 503
    assert strict.json()["status"] == "degraded"


@pytest.mark.django_db
def test_a_heartbeat_older_than_the_bound_reports_the_worker_late(client, settings):
    settings.HEARTBEAT_MAX_AGE_S = 90
    heartbeat_record(now=timezone.now() - timedelta(seconds=120))

    body = client.get("/healthz").json()

    assert body["status"] == "degraded"
    assert body["worker"]["status"] == "late"
    assert body["worker"]["age_s"] >= 120
    assert client.get("/healthz?strict=1").status_code == 503


@pytest.mark.django_db
def test_head_healthz_answers_like_get_without_a_body(client, worker_alive):
    response = client.head("/healthz")

    assert response.status_code == 200
    assert response.content == b""


def test_healthz_answers_only_get_and_head(client):
    assert client.post("/healthz").status_code == 405
