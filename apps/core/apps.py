from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Project-wide plumbing that belongs to no domain app: health, the
    worker heartbeat, request limits and local set-up."""

    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from . import checks  # noqa: F401 (registers the system checks)
        from .mirrors import psycopg_timestamps

        connection_created.connect(psycopg_timestamps.register, dispatch_uid="tenure.timestamps")
