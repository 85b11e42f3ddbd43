from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Project-wide plumbing that belongs to no domain app: health, the
    worker heartbeat, request limits and local set-up."""

    name = "apps.core"
    label = "core"
