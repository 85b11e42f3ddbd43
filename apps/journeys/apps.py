from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "apps.journeys"
    label = "journeys"
    verbose_name = "Journeys"

    def ready(self) -> None:
        # Registers the triggers' listeners on the segments' and ingestion hooks.
        from apps.customers.hooks import on_merge_in_transaction

        from . import ingest_work, triggers  # noqa: F401
        from .enrollment import enrollments_exit_merged

        on_merge_in_transaction(enrollments_exit_merged)
