"""Providers by channel: `get_provider("email")` is the one EMAIL_PROVIDER
names, `get_provider("sms")` the one SMS_PROVIDER names.

Built once per process and configuration (the SDK clients keep connection
pools), and built again when the settings they read change (tests override
them)."""

from importlib import import_module

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.messaging.models import Channel

from .base import OutcomeUnknownError, PermanentError, Provider, ProviderError, TransientError

__all__ = [
    "OutcomeUnknownError",
    "PermanentError",
    "Provider",
    "ProviderError",
    "TransientError",
    "get_provider",
    "import_configured",
]

# name -> (module, class, channels it can serve)
REGISTRY = {
    "console": ("console", "ConsoleProvider", {Channel.EMAIL, Channel.SMS}),
    "locmem": ("locmem", "LocmemProvider", {Channel.EMAIL, Channel.SMS}),
    "sendgrid": ("sendgrid", "SendGridProvider", {Channel.EMAIL}),
    "twilio": ("twilio", "TwilioProvider", {Channel.SMS}),
}
SETTING = {Channel.EMAIL: "EMAIL_PROVIDER", Channel.SMS: "SMS_PROVIDER"}
# Everything a provider reads at construction: a change builds it afresh.
CONFIG = (
    "DELIVERY_CONCURRENCY",
    "DELIVERY_TIMEOUT_S",
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "SENDGRID_RATE_PER_SECOND",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_BASE_URL",
    "TWILIO_FROM_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_RATE_PER_SECOND",
)

_built: dict[tuple, Provider] = {}


def get_provider(channel: str) -> Provider:
    """The configured provider for `channel`; ImproperlyConfigured, naming the
    setting, for an unknown name or one that cannot serve the channel."""
    cls, name = _configured_class(channel)
    key = (channel, name, *(getattr(settings, option) for option in CONFIG))
    if key not in _built:
        _built[key] = cls(channel)
    return _built[key]


def import_configured() -> None:
    """Import the configured providers' modules (and so their SDKs), building
    nothing: a Celery worker's main process does, before its prefork
    children fork, so that each child does not import them again on its
    first message (SendGrid's and Twilio's: 0.1-0.3 s of CPU). A channel
    configured wrongly is skipped: delivery reports it."""
    for channel in SETTING:
        try:
            _configured_class(channel)
        except ImproperlyConfigured:
            continue


def _configured_class(channel: str) -> tuple[type[Provider], str]:
    if channel not in SETTING:
        raise ValueError(f"unknown channel {channel!r}; known: {', '.join(SETTING)}")
    setting = SETTING[channel]
    name = getattr(settings, setting)
    if name not in REGISTRY:
        raise ImproperlyConfigured(
            f"{setting}={name!r} is not a provider; choose one of {', '.join(REGISTRY)}"
        )
    module_name, class_name, channels = REGISTRY[name]
    if channel not in channels:
        raise ImproperlyConfigured(f"{setting}={name!r}: {name} does not send {channel}")
    return getattr(import_module(f"{__name__}.{module_name}"), class_name), name
