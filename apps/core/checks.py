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


@register("tenure")
def secret_key_is_given(app_configs, **kwargs) -> list[Warning]:
    """Links in messages (unsubscribe, preferences, tracking, NPS) carry
    tokens signed with SECRET_KEY: every machine must check them with the
    same key, and a key made on one machine exists there only."""
    if settings.DEBUG or not getattr(settings, "SECRET_KEY_GENERATED", False):
        return []
    return [
        Warning(
            "SECRET_KEY is not set: this machine made its own (TENURE_DATA_DIR/secret_key), so "
            "links signed here fail on any other machine and after the data folder is lost.",
            hint="Set SECRET_KEY to one long random value, the same for every process "
            "(DEBUG=1 silences this locally).",
            id="tenure.W002",
        )
    ]
