from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "apps.journeys"
    label = "journeys"
    verbose_name = "Journeys"

    def ready(self) -> None:
        # Registers the triggers' listeners on the segments' and ingestion hooks.
        from . import ingest_work, triggers  # noqa: F401
