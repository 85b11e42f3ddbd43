from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Project-wide plumbing that belongs to no domain app: health, the
    worker heartbeat, request limits and local set-up."""

    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from . import checks, timestamps  # noqa: F401 (checks: registers the system checks)

        connection_created.connect(timestamps.register, dispatch_uid="tenure.timestamps")
