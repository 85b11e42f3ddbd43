from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "apps.tracking"
    label = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        # Tracked links and the open pixel are added to every rendered email
        # through messaging's post-render hook (messaging never imports tracking).
        from . import links

        links.register()
