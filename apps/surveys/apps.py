from django.apps import AppConfig


class SurveysConfig(AppConfig):
    name = "apps.surveys"
    label = "surveys"
    verbose_name = "NPS surveys"

    def ready(self) -> None:
        # Survey links in the render context and "reply with 0-10" by SMS, through
        # the registries messaging and tracking expose (they never import surveys).
        from . import listeners

        listeners.register()
