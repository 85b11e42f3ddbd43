"""Deployment checks (`manage.py check --deploy` and every start-up)."""

from django.conf import settings
from django.core.checks import Warning, register


@register("tenure")
def public_base_url_is_https(app_configs, **kwargs) -> list[Warning]:
    """Unsubscribe links go into `List-Unsubscribe`, which mailbox providers
    honour only over https, and Twilio signs webhooks for the public URL."""
    if settings.DEBUG or settings.PUBLIC_BASE_URL.startswith("https://"):
        return []
    return [
        Warning(
            f"PUBLIC_BASE_URL is {settings.PUBLIC_BASE_URL!r}: links in messages (unsubscribe, "
            "preferences, tracking, NPS) should be https in production.",
            hint="Set PUBLIC_BASE_URL=https://your-host (DEBUG=1 silences this locally).",
            id="tenure.W001",
        )
    ]
