from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.customers.selectors import customer_by_user_id
from apps.messaging.forms import clean_address
from apps.messaging.models import Channel, Message, Template
from apps.messaging.rendering import TemplateRenderError, render
from apps.messaging.services import message_send_test

# Outcomes that mean the message did not (and will not) go.
NOT_SENT = {Message.Status.FAILED, Message.Status.SUPPRESSED, Message.Status.BOUNCED}


class Command(BaseCommand):
    help = (
        "Render a template for a customer and send it now through the configured provider "
        "(EMAIL_PROVIDER / SMS_PROVIDER) as a test; prints the message id, status and reason. "
        "Exits with status 1 when the template or customer is unknown, the template does not "
        "render, or the message was not sent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--template", required=True, metavar="SLUG")
        parser.add_argument("--customer", required=True, metavar="EXTERNAL_ID")
        parser.add_argument(
            "--to", default="", help="send to this address or number instead of the customer's"
        )

    def handle(self, *args, template: str, customer: str, to: str, **options):
        found = Template.objects.filter(slug=template).first()
        if found is None:
            known = ", ".join(Template.objects.order_by("slug").values_list("slug", flat=True)[:20])
            raise CommandError(
                f"no template with slug {template!r}" + (f" (templates: {known})" if known else "")
            )
        person = customer_by_user_id(customer)
        if person is None:
            raise CommandError(f"no customer with external id {customer!r}")
        sms = found.channel == Channel.SMS
        if to:
            try:
                to = clean_address(found.channel, to)
            except Exception as exc:  # ValidationError: its message names the problem
                raise CommandError(
                    f"--to: {' '.join(getattr(exc, 'messages', [str(exc)]))}"
                ) from None
        else:
            to = person.phone if sms else person.email
            if not to:
                kind = "phone number" if sms else "email address"
                raise CommandError(f"customer {customer!r} has no {kind}; give one with --to")

        now = timezone.now()
        try:  # a render error is reported before any message is written
            render(found, customer=person, now=now)
        except TemplateRenderError as exc:
            raise CommandError(f"template {template!r} does not render: {exc}") from None

        try:
            message = message_send_test(template=found, customer=person, to=to, now=now)
        except ImproperlyConfigured as exc:
            raise CommandError(f"not sent: {exc}") from None
        self.stdout.write(f"message {message.pk}: {message.status}")
        self.stdout.write(f"  to {message.to_address} via {message.provider or '(no provider)'}")
        if message.provider_message_id:
            self.stdout.write(f"  provider message id {message.provider_message_id}")
        if message.reason:
            self.stdout.write(f"  reason: {message.reason}")
        if message.error:
            self.stdout.write(f"  error: {message.error}")
        if message.status == Message.Status.QUEUED:
            when = f" at {message.send_after:%H:%M:%S} UTC" if message.send_after else ""
            why = message.error or "the provider did not answer"
            raise CommandError(
                f"message {message.pk} was not sent yet: {why}; "
                f"delivery retries it{when} (with a worker running)"
            )
        if message.status in NOT_SENT:
            why = message.reason or message.error or message.status
            raise CommandError(f"message {message.pk} was not sent: {why}")
