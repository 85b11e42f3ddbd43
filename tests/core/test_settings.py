"""The one settings module, loaded in a fresh interpreter with a given environment."""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, django
django.setup()
from django.conf import settings
from config.celery import app
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "host": db["HOST"], "port": db["PORT"], "name": db["NAME"],
    "embedded": settings.DATABASE_EMBEDDED,
    "broker": app.conf.broker_url, "cache": settings.CACHES["default"]["BACKEND"],
    "email": settings.EMAIL_PROVIDER, "sms": settings.SMS_PROVIDER,
    "scheduler": app.conf.beat_scheduler, "acks_late": app.conf.task_acks_late,
    "prefetch": app.conf.worker_prefetch_multiplier, "serializer": app.conf.task_serializer,
    "accept": app.conf.accept_content, "queues": sorted(q.name for q in app.conf.task_queues),
    "time_limit": app.conf.task_time_limit, "data_dir": str(settings.DATA_DIR),
    "transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
}))
"""

STRIPPED = ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EMAIL_PROVIDER", "SMS_PROVIDER")


def load_settings(tmp_path, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    base.update(TENURE_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="config.settings")
    base.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=base, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_nothing_set_it_runs_on_embedded_defaults(tmp_path):
    loaded = load_settings(tmp_path)

    # The embedded PostgreSQL under data/postgres, over its socket; settings
    # alone start nothing (manage.py does).
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert (loaded["host"], loaded["port"]) == (str(tmp_path / "data" / "postgres"), "")
    assert loaded["name"] == "tenure"
    assert loaded["embedded"] is True
    assert not (tmp_path / "data" / "postgres").exists()
    assert loaded["broker"] == "filesystem://"
    assert loaded["transport"]["data_folder_in"].startswith(str(tmp_path / "data"))
    assert "FileBasedCache" in loaded["cache"]
    assert (loaded["email"], loaded["sms"]) == ("console", "console")


def test_urls_switch_it_to_postgresql_and_redis(tmp_path):
    loaded = load_settings(
        tmp_path,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/15",
        CACHE_URL="redis://127.0.0.1:6379/14",
    )

    assert (loaded["host"], loaded["port"], loaded["name"]) == ("127.0.0.1", 5432, "postgres")
    assert loaded["embedded"] is False
    assert loaded["broker"] == "redis://127.0.0.1:6379/15"
    assert "redis" in loaded["cache"].lower()
    assert loaded["transport"] == {"visibility_timeout": 3600}


def test_a_socket_directory_in_the_url_is_decoded_and_the_embedded_one_recognised(tmp_path):
    socket_dir = tmp_path / "data" / "postgres"
    embedded = load_settings(
        tmp_path, DATABASE_URL=f"postgres://postgres@{quote(str(socket_dir), safe='')}/tenure"
    )
    other = load_settings(tmp_path, DATABASE_URL="postgres://tenure@%2Fvar%2Frun%2Fpostgresql/app")

    assert (embedded["host"], embedded["embedded"]) == (str(socket_dir), True)
    assert (other["host"], other["name"]) == ("/var/run/postgresql", "app")
    assert other["embedded"] is False


def test_celery_is_configured_for_safe_delivery(tmp_path):
    loaded = load_settings(tmp_path)

    assert loaded["acks_late"] is True
    assert loaded["prefetch"] == 1
    assert loaded["serializer"] == "json"
    assert loaded["accept"] == ["json"]
    assert loaded["queues"] == ["default", "delivery", "tracking"]
    assert loaded["time_limit"] == 300
    assert loaded["scheduler"] == "django_celery_beat.schedulers:DatabaseScheduler"


def test_a_local_secret_key_is_generated_once_and_kept(tmp_path):
    load_settings(tmp_path)
    key = (tmp_path / "data" / "secret_key").read_text()
    load_settings(tmp_path)

    assert len(key) > 40
    assert (tmp_path / "data" / "secret_key").read_text() == key
