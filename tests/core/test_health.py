import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from apps.core.health import heartbeat_last
from apps.core.tasks import heartbeat


@pytest.mark.django_db
def test_healthz_is_200_when_the_database_and_broker_answer(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"status": "ok", "vendor": connection.vendor}
    assert body["broker"] == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0", CELERY_BROKER_TRANSPORT_OPTIONS={})
def test_healthz_is_503_naming_the_broker_when_it_is_down(client):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["status"] == "ok"
    assert body["broker"]["status"] == "error"
    assert "Connection refused" in body["broker"]["error"]


@pytest.fixture
def unreachable_database(transactional_db):
    """Point the default connection at a database that cannot be reached, for
    real: a closed port on PostgreSQL, an impossible path on SQLite."""
    original = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")
    else:
        connection.settings_dict["NAME"] = "/nonexistent/dir/tenure.sqlite3"
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(original)


def test_healthz_is_503_naming_the_database_when_it_is_down(client, unreachable_database):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"]["status"] == "error"
    assert body["database"]["error"]
    assert body["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_the_heartbeat_task_is_reported_with_its_age(client):
    heartbeat()  # the task body, called directly; a real worker runs it in integration

    body = client.get("/healthz").json()

    assert heartbeat_last() <= timezone.now()
    assert body["worker"]["last_heartbeat"] == heartbeat_last().isoformat()
    assert 0 <= body["worker"]["age_s"] < 5


def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405
