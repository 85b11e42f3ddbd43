from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "apps.messaging"
    label = "messaging"
    verbose_name = "Messaging"

    def ready(self) -> None:
        from apps.customers import hooks

        from . import listeners, policies  # noqa: F401 - policies registers its settings check

        # Consent traits on identify (sms_opt_in, email_opt_in) → the consent ledger.
        hooks.on_ingest(listeners.consent_from_traits)
